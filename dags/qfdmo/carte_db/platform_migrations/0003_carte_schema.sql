-- The schema where the dbt project (dags/qfdmo/carte_dbt) builds the carte's models: the displayed
-- acteurs, the exhaustive view and the open data are computed here, checked by `dbt build`, then
-- copied into the webapp's qfdmo_displayed* / qfdmo_vue* tables by qfdmo.carte.swap. Nothing here
-- is read by the webapp.
CREATE SCHEMA IF NOT EXISTS qfdmo_carte;

-- SHA-1 for the public uuid (uuid5). pgcrypto is a trusted extension: a database owner may create it.
CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- The acteur's public identifier, as the Python package shortuuid computes
-- `shortuuid.uuid(name=identifiant_unique)`: uuid5 (NAMESPACE_URL for names starting with http://
-- or https://, NAMESPACE_DNS otherwise), its 128 bits written in base 57, most significant digit
-- first, left-padded to 22 characters with the alphabet's first letter.
CREATE FUNCTION qfdmo_carte.public_uuid(name text) RETURNS varchar
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    alphabet constant text := '23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
    namespace bytea := CASE WHEN lower(name) LIKE 'http://%' OR lower(name) LIKE 'https://%'
                            THEN '\x6ba7b8119dad11d180b400c04fd430c8'::bytea
                            ELSE '\x6ba7b8109dad11d180b400c04fd430c8'::bytea END;
    hash bytea;
    number numeric := 0;
    encoded text := '';
BEGIN
    hash := substring(digest(namespace || convert_to(name, 'UTF8'), 'sha1') FROM 1 FOR 16);
    hash := set_byte(hash, 6, (get_byte(hash, 6) & 15) | 80);    -- version 5
    hash := set_byte(hash, 8, (get_byte(hash, 8) & 63) | 128);   -- RFC 4122 variant
    FOR i IN 0..15 LOOP
        number := number * 256 + get_byte(hash, i);
    END LOOP;
    FOR i IN 1..22 LOOP
        encoded := substr(alphabet, mod(number, 57)::integer + 1, 1) || encoded;
        number := div(number, 57);
    END LOOP;
    RETURN encoded;
END
$$;
