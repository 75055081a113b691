"""`python -m devstack run|up|down|status|exec` — the local stack's command line (see README)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

from devstack.config import VENV_BIN, StackConfig
from devstack.processes import StackError, processes_in_group, stop_groups, wait_until
from devstack.stack import Stack


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run(config: StackConfig) -> int:
    """Foreground: start everything, watch it, and stop it all on Ctrl-C / SIGTERM."""
    # Explicit handlers: a shell that starts us in the background leaves SIGINT ignored otherwise.
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    stack = Stack(config)
    pid_file = config.state_dir / "stack.pid"
    try:
        started = time.monotonic()
        stack.start()
        pid_file.write_text(str(os.getpid()))
        print(stack.banner() + f"  Prête en {time.monotonic() - started:.1f} s. Ctrl-C pour tout arrêter.", flush=True)
        while not (dead := stack.group.dead()):
            time.sleep(1)
        child = dead[0]
        print(
            f"\n{child.name} s'est arrêté (code {child.process.returncode}); arrêt de la plateforme.\n"
            f"{stack.group.log_tail(child)}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("\nArrêt de la plateforme…", flush=True)
        return 0
    except StackError as error:
        print(f"\nErreur : {error}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        pid_file.unlink(missing_ok=True)


def up(config: StackConfig) -> int:
    """Background: start `run` in its own session and return once every component is healthy."""
    pid_file = config.state_dir / "stack.pid"
    if pid_file.exists() and processes_in_group(int(pid_file.read_text())):
        print(f"La plateforme tourne déjà (pid {pid_file.read_text()}). `make down` pour l'arrêter.")
        return 0
    config.state_dir.mkdir(parents=True, exist_ok=True)
    log_path = config.state_dir / "stack.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(VENV_BIN / "python"), "-m", "devstack", "run"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write_text(str(process.pid))
    started = time.monotonic()

    def ready() -> bool:
        if process.poll() is not None:
            raise StackError(f"Le démarrage a échoué :\n{log_path.read_text(errors='replace')[-3000:]}")
        return "Prête en" in log_path.read_text(errors="replace")

    try:
        wait_until(ready, "the stack to become healthy", timeout=300)
    except StackError as error:
        pid_file.unlink(missing_ok=True)
        print(f"Erreur : {error}", file=sys.stderr)
        return 1
    print(Stack(config).banner() + f"  Prête en {time.monotonic() - started:.1f} s (journal : {log_path}).")
    return 0


def down(config: StackConfig) -> int:
    pid_file = config.state_dir / "stack.pid"
    pgids_file = config.state_dir / "stack.pgids"
    pgids = [int(p) for p in pgids_file.read_text().split()] if pgids_file.exists() else []
    if pid_file.exists():
        supervisor = int(pid_file.read_text())
        pgids.append(supervisor)
        # The supervisor stops its children itself; stop_groups() below catches anything it missed.
        try:
            os.kill(supervisor, signal.SIGTERM)
            wait_until(lambda: not os.path.exists(f"/proc/{supervisor}"), "the stack to stop", timeout=30)
        except (ProcessLookupError, StackError):
            pass
    if not pgids:
        print("Aucune plateforme en cours d'exécution.")
        return 0
    left = stop_groups(sorted(set(pgids)), timeout=30)
    pid_file.unlink(missing_ok=True)
    pgids_file.unlink(missing_ok=True)
    if left:
        print(f"Processus encore présents : {left}", file=sys.stderr)
        return 1
    print("Plateforme arrêtée, aucun processus restant.")
    return 0


def status(config: StackConfig) -> int:
    health = Stack(config).health()
    print(json.dumps(health, indent=2) if health else f"Airflow ne répond pas sur {config.api_url}.")
    return 0 if health else 1


def exec_command(config: StackConfig, command: list[str]) -> int:
    if not command:
        print("usage: python -m devstack exec <command> [args…]", file=sys.stderr)
        return 2
    env = {**os.environ, **config.airflow_env()}
    # Airflow warns at import that graphviz (only `dags show` renders graphs) is missing, on stdout:
    # `bin/airflow … -o json | jq` must get JSON alone.
    ignored = "ignore:Could not import graphviz"
    env["PYTHONWARNINGS"] = ",".join(w for w in (env.get("PYTHONWARNINGS"), ignored) if w)
    if _asks_for_output_format(command):
        # Airflow 3.3 moves stdlib log handlers off stdout for `-o` commands, but its structlog
        # info lines (`dags trigger`: "creating dag run") still land there, before the JSON.
        env.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    os.execvpe(command[0], command, env)
    return 127  # not reached


def _asks_for_output_format(command: list[str]) -> bool:
    return any(arg in ("-o", "--output") or arg.startswith(("--output=", "-oj", "-oy")) for arg in command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("command", choices=["run", "up", "down", "status", "exec"])
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    config = StackConfig.load()
    try:
        if options.command == "exec":
            return exec_command(config, options.args)
        return {"run": run, "up": up, "down": down, "status": status}[options.command](config)
    except StackError as error:
        print(f"Erreur : {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
