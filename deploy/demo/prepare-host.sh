#!/usr/bin/env bash
# Makes a Debian 12 machine ready for the platformctl demo: Docker running, and
# PostgreSQL 15 reachable from containers on the default Docker bridge, with an admin
# role for platformctl. Also installs Caddy, which start-caddy.sh then runs. Safe to
# run again: a second run changes nothing.
#
# Usage (as root): deploy/demo/prepare-host.sh STATE_DIR
#   e.g. deploy/demo/prepare-host.sh /var/lib/platformctl-demo
#
# STATE_DIR (mode 0700) receives:
#   pg-admin-password  password of the PostgreSQL role platformctl_admin (0600)
#   host.env           where platformctl finds PostgreSQL, as shell assignments (0600)
#   dockerd.log        output of dockerd, when this script had to start it
set -Eeuo pipefail

readonly PROG=prepare-host.sh
readonly PG_VERSION=15 PG_CLUSTER=main
readonly ADMIN_ROLE=platformctl_admin
readonly LEARNER_GROUP=platformctl_learners
readonly LEARNER_DB=learners
readonly PACKAGES=(postgresql docker.io busybox-static python3 iproute2 caddy curl)
readonly HBA_BEGIN="# platformctl demo"
readonly HBA_END="# platformctl demo end"
# Debian's interpreter from the python3 package, whatever else is on PATH; -I keeps
# the environment and user site-packages out.
readonly PYTHON=(/usr/bin/python3 -I)

die() {
    printf '%s: %s\n' "$PROG" "$*" >&2
    exit 1
}

say() {
    printf '==> %s\n' "$*" >&2
}

# A command that fails unexpectedly stops the script with one line naming it. In a
# subshell the status is only passed on, so that the line is printed once.
on_error() {
    local status=$1 line=$2 command=$3
    ((BASH_SUBSHELL == 0)) || exit "$status"
    die "stopped at line $line (status $status): $command"
}
trap 'on_error $? $LINENO "$BASH_COMMAND"' ERR

# Runs a command with its output hidden unless it fails.
quietly() {
    local what=$1 output
    shift
    if ! output=$("$@" 2>&1); then
        printf '%s\n' "$output" >&2
        die "$what failed (output above)"
    fi
}

# Runs SQL as the PostgreSQL superuser, from -c arguments or standard input.
pg_sql() {
    (cd / && runuser -u postgres -- psql -X -q -At -v ON_ERROR_STOP=1 \
        -p "$pg_port" -d postgres "$@")
}

tcp_open() {
    # shellcheck disable=SC2016 # $1 and $2 belong to the inner bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

package_installed() {
    local status
    status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)
    [[ $status == "install ok installed" ]]
}

docker_ready() {
    docker info >/dev/null 2>&1
}

wait_for_docker() {
    local deadline=$((SECONDS + $1))
    until docker_ready; do
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}

# Writes standard input to a file with mode 0600 unless it already holds exactly
# that; the file is replaced in one step. Succeeds only when it wrote.
write_private_file() {
    local path=$1 content tmp
    # The x keeps trailing newlines, which command substitution would drop.
    content=$(cat && echo x)
    if [[ -f $path && "$(cat "$path" && echo x)" == "$content" ]]; then
        [[ $(stat -c %a "$path") == 600 ]] || chmod 0600 "$path"
        return 1
    fi
    tmp=$(mktemp "$path.XXXXXX")
    printf '%s' "${content%x}" >"$tmp"
    mv -f "$tmp" "$path"
}

# Prints nothing when the SCRAM-SHA-256 verifier on standard input was made from the
# password in the file named by the argument; otherwise prints a new verifier for
# that password (RFC 5802 and RFC 7677, in PostgreSQL's storage format).
read -r -d '' SCRAM_VERIFIER_PY <<'PY' || true
import base64, hashlib, hmac, os, sys

def keys(password, salt, iterations):
    salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return hashlib.sha256(client_key).digest(), server_key

with open(sys.argv[1], "rb") as f:
    password = f.read().strip()
current = sys.stdin.read().strip()
try:
    method, iterations_salt, key_pair = current.split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key, server_key = key_pair.split(":")
    computed = keys(password, base64.b64decode(salt), int(iterations))
    expected = (base64.b64decode(stored_key), base64.b64decode(server_key))
    matches = all(map(hmac.compare_digest, computed, expected))
    if method == "SCRAM-SHA-256" and matches:
        sys.exit(0)
except ValueError:
    pass

salt = os.urandom(16)
stored_key, server_key = keys(password, salt, 4096)
b64 = lambda data: base64.b64encode(data).decode("ascii")
print(f"SCRAM-SHA-256$4096:{b64(salt)}${b64(stored_key)}:{b64(server_key)}")
PY
readonly SCRAM_VERIFIER_PY

# Prints pg_hba.conf (arguments: its path, then the block's first and last lines)
# with the platformctl block (environment variable HBA_BLOCK) put before the first
# rule, or in place of an older copy of the block. Prints nothing when the file
# already holds the block as it should be.
read -r -d '' HBA_EDIT_PY <<'PY' || true
import os, sys

path, begin, end = sys.argv[1:4]
block = os.environ["HBA_BLOCK"]
with open(path) as f:
    lines = f.read().splitlines()
wanted = block.splitlines()

if begin in lines:
    start = lines.index(begin)
    stop = lines.index(end, start) + 1 if end in lines[start:] else start + 1
    if lines[start:stop] == wanted:
        sys.exit(0)
    del lines[start:stop]
    at = start
else:
    rules = [
        i for i, line in enumerate(lines)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    at = rules[0] if rules else len(lines)
    wanted = wanted + [""]

lines[at:at] = wanted
print("\n".join(lines))
PY
readonly HBA_EDIT_PY

# --- Arguments and state folder -------------------------------------------------

if [[ $# -ne 1 || $1 == -* ]]; then
    die "usage: $PROG STATE_DIR (for example /var/lib/platformctl-demo)"
fi
if [[ $EUID -ne 0 ]]; then
    die "must run as root: it installs packages and configures PostgreSQL and Docker"
fi

state=$(realpath -m -- "$1")
# host.env is read by shells and by simple KEY=value parsers alike, so the paths
# written there must need no quoting.
if [[ ! $state =~ ^[A-Za-z0-9._/-]+$ ]]; then
    die "state folder '$state' may contain only letters, digits, '.', '_', '-' and '/'"
fi
if [[ ! -d $state ]]; then
    say "creating state folder $state"
    install -d -m 0700 "$state"
fi
[[ $(stat -c %a "$state") == 700 ]] || chmod 0700 "$state"

password_file=$state/pg-admin-password

# --- Debian packages ------------------------------------------------------------

missing=()
for package in "${PACKAGES[@]}"; do
    package_installed "$package" || missing+=("$package")
done
if ((${#missing[@]} > 0)); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    quietly "apt-get update" apt-get update
    quietly "installing ${missing[*]}" \
        apt-get install -y --no-install-recommends "${missing[@]}"
fi

# --- Docker ---------------------------------------------------------------------

if ! docker_ready; then
    say "starting dockerd"
    started=no
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        if systemctl start docker >/dev/null 2>&1 && wait_for_docker 60; then
            started=yes
        fi
    elif command -v service >/dev/null; then
        if service docker start >/dev/null 2>&1 && wait_for_docker 30; then
            started=yes
        fi
    fi

    if [[ $started == no ]]; then
        # The service manager could not do it (containers usually have none):
        # run dockerd directly, in its own session so that it outlives this script.
        say "starting dockerd directly, log in $state/dockerd.log"
        setsid dockerd >>"$state/dockerd.log" 2>&1 </dev/null &
        dockerd_pid=$!
        deadline=$((SECONDS + 60))
        until docker_ready; do
            if ! kill -0 "$dockerd_pid" 2>/dev/null; then
                die "dockerd exited at start; see $state/dockerd.log"
            fi
            if ((SECONDS >= deadline)); then
                die "dockerd did not answer within 60 s; see $state/dockerd.log"
            fi
            sleep 1
        done
    fi
fi

# Containers on the default bridge reach the host at the bridge's own address.
bridge=$(docker network inspect bridge \
    -f '{{index .Options "com.docker.network.bridge.name"}}')
if [[ -z $bridge || $bridge == "<no value>" ]]; then
    bridge=docker0
fi
bridge_cidr=$(ip -4 -o addr show dev "$bridge" | awk '{print $4; exit}')
if [[ ! $bridge_cidr =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$ ]]; then
    die "found no IPv4 address on Docker's bridge '$bridge'; is its default bridge" \
        "disabled in the dockerd settings?"
fi
gateway=${bridge_cidr%/*}
subnet=$("${PYTHON[@]}" -c \
    'import ipaddress, sys; print(ipaddress.ip_interface(sys.argv[1]).network)' \
    "$bridge_cidr")

# --- PostgreSQL cluster ---------------------------------------------------------

cluster_name="$PG_VERSION/$PG_CLUSTER"
log_file=/var/log/postgresql/postgresql-$PG_VERSION-$PG_CLUSTER.log

if ! pg_lsclusters -h "$PG_VERSION" "$PG_CLUSTER" >/dev/null 2>&1; then
    say "creating PostgreSQL cluster $cluster_name"
    quietly "creating PostgreSQL cluster $cluster_name" \
        pg_createcluster "$PG_VERSION" "$PG_CLUSTER"
fi

read -r _ _ pg_port pg_status _ < <(pg_lsclusters -h "$PG_VERSION" "$PG_CLUSTER")
if [[ $pg_status != online* ]]; then
    say "starting PostgreSQL $cluster_name"
    quietly "starting PostgreSQL $cluster_name" \
        pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start
fi

# --- Listening on the bridge ----------------------------------------------------

wanted_listen="localhost,$gateway"
restart=no
if [[ $(pg_sql -c "SHOW listen_addresses") != "$wanted_listen" ]]; then
    say "letting PostgreSQL listen on $wanted_listen"
    pg_sql <<<"ALTER SYSTEM SET listen_addresses = '$wanted_listen';"
    restart=yes
elif ! tcp_open "$gateway" "$pg_port"; then
    # Happens when PostgreSQL started before Docker had created its bridge.
    say "PostgreSQL is not listening on $gateway:$pg_port yet"
    restart=yes
fi
if [[ $restart == yes ]]; then
    say "restarting PostgreSQL $cluster_name"
    quietly "restarting PostgreSQL $cluster_name" \
        pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" restart
fi
if ! tcp_open "$gateway" "$pg_port"; then
    die "PostgreSQL does not accept connections on $gateway:$pg_port; see $log_file"
fi

# --- Client authentication ------------------------------------------------------

# PostgreSQL checks group membership (+role) when a client connects, so these rules
# may name the learner group before `platformctl init` creates it.
hba_rule() {
    printf '%-7s %-10s %-22s %-18s %s\n' "$@"
}
hba_block=$(
    echo "$HBA_BEGIN"
    echo "# Learners may reach only the $LEARNER_DB database, over TCP with a password,"
    echo "# from this host and from the default Docker bridge."
    echo "# Kept up to date by deploy/demo/prepare-host.sh."
    # platformctl's own role first: while it makes or removes a learner it is
    # briefly a member of that learner's role, and so of the group below.
    hba_rule host all "$ADMIN_ROLE" 127.0.0.1/32 scram-sha-256
    hba_rule host "$LEARNER_DB" "+$LEARNER_GROUP" "$subnet" scram-sha-256
    # The learners' own network (platformctl-learners) gets its subnet from
    # Docker's default pools, which all lie in 172.16.0.0/12.
    hba_rule host "$LEARNER_DB" "+$LEARNER_GROUP" 172.16.0.0/12 scram-sha-256
    hba_rule host "$LEARNER_DB" "+$LEARNER_GROUP" 127.0.0.1/32 scram-sha-256
    hba_rule host all "+$LEARNER_GROUP" 0.0.0.0/0 reject
    hba_rule host all "+$LEARNER_GROUP" ::/0 reject
    hba_rule local all "+$LEARNER_GROUP" "" reject
    echo "$HBA_END"
)
hba_file=$(pg_sql -c "SHOW hba_file")
new_hba=$(HBA_BLOCK=$hba_block \
    "${PYTHON[@]}" -c "$HBA_EDIT_PY" "$hba_file" "$HBA_BEGIN" "$HBA_END")
if [[ -n $new_hba ]]; then
    say "writing the platformctl rules into $hba_file"
    backup=$(mktemp "$hba_file.XXXXXX")
    cp -p "$hba_file" "$backup"
    # Overwriting in place keeps the file's owner and mode.
    printf '%s\n' "$new_hba" >"$hba_file"
    hba_errors=$(pg_sql -c "SELECT line_number || ': ' || error
                            FROM pg_hba_file_rules WHERE error IS NOT NULL")
    if [[ -n $hba_errors ]]; then
        cp -p "$backup" "$hba_file"
        rm -f "$backup"
        die "PostgreSQL rejected the new $hba_file (${hba_errors//$'\n'/; });" \
            "the previous version is back in place"
    fi
    rm -f "$backup"
    pg_sql -c "SELECT pg_reload_conf()" >/dev/null
fi

# --- Admin role -----------------------------------------------------------------

role_as_wanted=$(pg_sql -c "SELECT rolcanlogin AND rolcreaterole AND rolcreatedb
                                   AND NOT rolsuper
                            FROM pg_roles WHERE rolname = '$ADMIN_ROLE'")
if [[ -z $role_as_wanted ]]; then
    say "creating PostgreSQL role $ADMIN_ROLE"
    pg_sql -c "CREATE ROLE $ADMIN_ROLE LOGIN CREATEROLE CREATEDB NOSUPERUSER"
elif [[ $role_as_wanted != t ]]; then
    say "setting LOGIN CREATEROLE CREATEDB NOSUPERUSER on role $ADMIN_ROLE"
    pg_sql -c "ALTER ROLE $ADMIN_ROLE LOGIN CREATEROLE CREATEDB NOSUPERUSER"
fi

if [[ ! -e $password_file ]]; then
    say "generating a password for $ADMIN_ROLE in $password_file"
    password=$("${PYTHON[@]}" -c 'import secrets; print(secrets.token_urlsafe(24))')
    printf '%s' "$password" | write_private_file "$password_file" || true
    unset password
fi
if [[ ! -s $password_file ]]; then
    die "password file '$password_file' is empty; delete it to get a new password"
fi
[[ $(stat -c %a "$password_file") == 600 ]] || chmod 0600 "$password_file"

# Only the verifier travels to PostgreSQL: the password stays out of every command
# line and statement, and so out of the process list and the server log.
current_verifier=$(pg_sql -c "SELECT coalesce(rolpassword, '') FROM pg_authid
                              WHERE rolname = '$ADMIN_ROLE'")
new_verifier=$("${PYTHON[@]}" -c "$SCRAM_VERIFIER_PY" "$password_file" \
    <<<"$current_verifier")
if [[ -n $new_verifier ]]; then
    b64='[A-Za-z0-9+/=]+'
    if [[ ! $new_verifier =~ ^SCRAM-SHA-256\$4096:$b64\$$b64:$b64$ ]]; then
        die "computing the SCRAM verifier for $ADMIN_ROLE gave an unexpected result"
    fi
    say "setting the password of $ADMIN_ROLE from $password_file"
    pg_sql <<<"ALTER ROLE $ADMIN_ROLE PASSWORD '$new_verifier';"
fi

# The password goes through the environment of this one psql, which other users
# cannot read, never through its arguments.
if ! login=$(PGPASSWORD=$(<"$password_file") PGCONNECT_TIMEOUT=5 psql -X -q -At \
    -h 127.0.0.1 -p "$pg_port" -U "$ADMIN_ROLE" -d postgres \
    -c "SELECT current_user" 2>&1) || [[ $login != "$ADMIN_ROLE" ]]; then
    die "cannot log in as $ADMIN_ROLE on 127.0.0.1:$pg_port" \
        "(${login//$'\n'/ }); see $log_file"
fi

# --- host.env -------------------------------------------------------------------

if write_private_file "$state/host.env" <<EOF; then
# Where platformctl finds PostgreSQL on this host. Kept up to date by
# deploy/demo/prepare-host.sh; edits are overwritten.
PG_ADMIN_HOST=127.0.0.1
PG_ADMIN_PORT=$pg_port
PG_ADMIN_USER=$ADMIN_ROLE
PG_ADMIN_PASSWORD_FILE=$password_file
WORKSPACE_PGHOST=$gateway
EOF
    say "wrote $state/host.env"
fi

say "host ready; settings in $state/host.env"
