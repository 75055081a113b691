# shellcheck shell=bash
# Functions shared by the entrypoints of the two images (sourced, never executed).
# They only read the environment and call `airflow`, so the tests can run them on a
# developer machine without Docker.

# Environments where the platform holds real data: development shortcuts are refused there.
QFDMO_PROTECTED_ENVIRONMENTS="preprod prod"

log() {
    # A closed stderr must not abort a shutdown in progress.
    printf '[qfdmo-entrypoint] %s\n' "$*" >&2 || true
}

die() {
    log "ERREUR: $*"
    exit 1
}

is_true() {
    case "${1,,}" in
        true | 1 | yes | on) return 0 ;;
        *) return 1 ;;
    esac
}

# Airflow reads a setting from AIRFLOW__S__K, or from the command/secret variants; any of
# them counts as "configured". Prints the plain value when there is one.
setting_value() {
    local name=$1
    printf '%s' "${!name:-}"
}

setting_is_configured() {
    local name=$1
    local cmd="${name}_CMD" secret="${name}_SECRET"
    [[ -n "${!name:-}" || -n "${!cmd:-}" || -n "${!secret:-}" ]]
}

# The development values of dags/.env.template all carry this marker, so a copy of the
# template pushed to preprod/prod is caught whatever the exact value.
looks_like_dev_value() {
    local value=${1,,}
    [[ "$value" == *devonly* || "$value" == *dev-only* ]]
}

# CleverCloud's PostgreSQL add-on exposes POSTGRESQL_ADDON_URI (postgresql://user:pass@host:port/db)
# to the apps it is linked to; Airflow wants AIRFLOW__DATABASE__SQL_ALCHEMY_CONN. An explicit
# value always wins.
use_postgresql_addon_if_linked() {
    if [[ -z "${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-}${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD:-}${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_SECRET:-}" && -n "${POSTGRESQL_ADDON_URI:-}" ]]; then
        local uri=${POSTGRESQL_ADDON_URI#postgres://}
        uri=${uri#postgresql://}
        export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://$uri"
        log "Base de métadonnées: add-on PostgreSQL (POSTGRESQL_ADDON_URI)."
    fi
}

# Validates the environment before anything starts. Prints every problem (not just the
# first one) so a deployment is fixed in one go. Returns non-zero when the container must
# not start.
preflight_check() {
    local environment=${ENVIRONMENT:-}
    local problems=()
    use_postgresql_addon_if_linked

    case "$environment" in
        development | preprod | prod) ;;
        "") problems+=("ENVIRONMENT n'est pas défini (attendu: development, preprod ou prod).") ;;
        *) problems+=("ENVIRONMENT='$environment' est inconnu (attendu: development, preprod ou prod).") ;;
    esac

    if [[ -z "${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-}${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD:-}${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_SECRET:-}" ]]; then
        problems+=("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN n'est pas défini: la base de métadonnées Airflow (PostgreSQL) est obligatoire.")
    fi

    if [[ " $QFDMO_PROTECTED_ENVIRONMENTS " == *" $environment "* ]]; then
        local name
        # Fernet: connection passwords in the metadata DB. JWT secret: tokens between the
        # scheduler and the api-server's execution API. API secret key: signed requests to
        # the scheduler's log server. All three must be shared by the webserver and the
        # scheduler apps, and be real secrets.
        for name in AIRFLOW__CORE__FERNET_KEY AIRFLOW__API_AUTH__JWT_SECRET AIRFLOW__API__SECRET_KEY; do
            if [[ "$name" == AIRFLOW__API_AUTH__JWT_SECRET && -n "${AIRFLOW__API_AUTH__JWT_PRIVATE_KEY_PATH:-}" ]]; then
                continue
            fi
            if ! setting_is_configured "$name"; then
                problems+=("$name est absent: sans lui, Airflow génère une valeur aléatoire par processus (secrets illisibles, jetons refusés entre webserver et scheduler). Définissez la même valeur secrète sur les applications webserver et scheduler.")
            elif looks_like_dev_value "$(setting_value "$name")"; then
                problems+=("$name contient la valeur de développement de dags/.env.template: générez une vraie valeur secrète.")
            fi
        done

        if is_true "${_AIRFLOW_WWW_USER_CREATE:-false}"; then
            local user=${_AIRFLOW_WWW_USER_USERNAME:-airflow}
            local password=${_AIRFLOW_WWW_USER_PASSWORD:-}
            if [[ -z "$password" ]]; then
                problems+=("_AIRFLOW_WWW_USER_PASSWORD est vide: impossible de créer le compte '$user'.")
            elif [[ "$password" == airflow || "$password" == "$user" ]] || looks_like_dev_value "$password"; then
                problems+=("Le compte '$user' utilise les identifiants de développement (airflow/airflow): choisissez un vrai mot de passe dans _AIRFLOW_WWW_USER_PASSWORD.")
            fi
        fi
        # A passwords file provided some other way (volume, image) is held to the same rule.
        local passwords_file=${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-${AIRFLOW_HOME:-/opt/airflow}/simple_auth_manager_passwords.json}
        if ! is_true "${_AIRFLOW_WWW_USER_CREATE:-false}" && [[ -r "$passwords_file" ]] &&
            python3 -c '
import json, sys
passwords = json.load(open(sys.argv[1], encoding="utf-8"))
sys.exit(0 if any(pw == "airflow" or pw == user for user, pw in passwords.items()) else 1)
' "$passwords_file" 2>/dev/null; then
            problems+=("$passwords_file contient les identifiants de développement (airflow/airflow): changez ce mot de passe.")
        fi
        if is_true "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS:-false}"; then
            problems+=("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS désactive l'authentification: interdit en $environment.")
        fi
    fi

    if ((${#problems[@]} > 0)); then
        log "Démarrage refusé (ENVIRONMENT=${environment:-<vide>}):"
        local problem
        for problem in "${problems[@]}"; do
            log "  - $problem"
        done
        return 1
    fi
    log "Vérifications préalables OK (ENVIRONMENT=$environment)."
}

# The metadata DB may still be starting (compose) or briefly unreachable (add-on restart).
wait_for_metadata_db() {
    local attempts=${QFDMO_DB_WAIT_ATTEMPTS:-30} delay=${QFDMO_DB_WAIT_DELAY:-2} i
    for ((i = 1; i <= attempts; i++)); do
        if airflow db check >/dev/null 2>&1; then
            return 0
        fi
        log "Base de métadonnées injoignable (essai $i/$attempts), nouvel essai dans ${delay}s."
        sleep "$delay"
    done
    die "base de métadonnées Airflow injoignable après $attempts essais."
}

migrate_metadata_db_if_asked() {
    if is_true "${_AIRFLOW_DB_MIGRATE:-false}"; then
        log "airflow db migrate"
        airflow db migrate
    fi
}

# Airflow 3's SimpleAuthManager keeps users in AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS and
# their passwords in a JSON file; we write that file from the environment so the password is
# the one the operator chose instead of a random one printed in the logs.
create_admin_if_asked() {
    is_true "${_AIRFLOW_WWW_USER_CREATE:-false}" || return 0
    local user=${_AIRFLOW_WWW_USER_USERNAME:-airflow}
    [[ -n "${_AIRFLOW_WWW_USER_PASSWORD:-}" ]] || die "_AIRFLOW_WWW_USER_PASSWORD est vide."
    [[ "$user" =~ ^[A-Za-z0-9_.-]+$ ]] || die "_AIRFLOW_WWW_USER_USERNAME='$user' contient des caractères interdits."

    export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-$user:admin}"
    export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-${AIRFLOW_HOME:-/opt/airflow}/simple_auth_manager_passwords.json}"
    mkdir -p "$(dirname "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")"
    # The password travels through the environment, never through argv (visible in ps).
    (
        umask 077
        QFDMO_ADMIN_USER="$user" python3 -c '
import json, os, sys
with open(sys.argv[1], "w", encoding="utf-8") as f:
    json.dump({os.environ["QFDMO_ADMIN_USER"]: os.environ["_AIRFLOW_WWW_USER_PASSWORD"]}, f)
    f.write("\n")
' "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
    )
    log "Compte administrateur '$user' configuré (SimpleAuthManager)."
}
