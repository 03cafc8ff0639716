#!/usr/bin/env bash
# A throwaway MariaDB server on loopback for the MySQL backend's tests and the demo.
#
#   bash scripts/mariadb.sh start DIR   # prints the URL: mysql://kt:kt@127.0.0.1:PORT
#   bash scripts/mariadb.sh stop DIR
#
# DIR holds the data directory, socket, log and pid file; nothing else on the machine
# is touched. The user `kt` may create databases: every test makes its own. Installs
# Debian's mariadb-server when it is missing (scripts/setup.sh does too).
set -euo pipefail

cmd=${1:?usage: mariadb.sh start|stop DIR}
dir=${2:?usage: mariadb.sh start|stop DIR}

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

case "$cmd" in
start)
    if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
        echo "mariadb.sh: installing mariadb-server" >&2
        "${sudo_cmd[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq mariadb-server >/dev/null
    fi
    mariadbd=$(command -v mariadbd || echo /usr/sbin/mariadbd)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ -f "$dir/mysqld.pid" ] && kill -0 "$(cat "$dir/mysqld.pid")" 2>/dev/null; then
        echo "mariadb.sh: a server already runs on $dir (pid $(cat "$dir/mysqld.pid")); stop it first" >&2
        exit 1
    fi
    user=$(id -un)
    if [ ! -d "$dir/data/mysql" ]; then
        mariadb-install-db --no-defaults --user="$user" --datadir="$dir/data" \
            --auth-root-authentication-method=socket --skip-test-db >"$dir/install.log" 2>&1 ||
            { cat "$dir/install.log" >&2; exit 1; }
    fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # Durability as in production (flush the log at every commit); buffers sized for
    # a test machine; packets large enough for the backend's batched statements.
    "$mariadbd" --no-defaults --user="$user" --datadir="$dir/data" --socket="$dir/mysqld.sock" \
        --pid-file="$dir/mysqld.pid" --port="$port" --bind-address=127.0.0.1 \
        --log-error="$dir/error.log" --max-allowed-packet=64M --innodb-buffer-pool-size=1G \
        --innodb-log-file-size=512M --innodb-flush-log-at-trx-commit=1 --skip-name-resolve \
        >/dev/null 2>&1 &
    server=$!
    # The socket answers, and the pid file is this server's (not a stale one's).
    alive() {
        mariadb-admin --no-defaults --socket="$dir/mysqld.sock" -uroot ping >/dev/null 2>&1 &&
            [ "$(cat "$dir/mysqld.pid" 2>/dev/null)" = "$server" ]
    }
    for _ in $(seq 1 120); do
        kill -0 "$server" 2>/dev/null || break
        alive && break
        sleep 0.5
    done
    if ! kill -0 "$server" 2>/dev/null || ! alive; then
        echo "mariadb.sh: the server did not start; $dir/error.log:" >&2
        tail -20 "$dir/error.log" >&2
        exit 1
    fi
    mariadb --no-defaults --socket="$dir/mysqld.sock" -uroot -e "
        CREATE USER IF NOT EXISTS 'kt'@'127.0.0.1' IDENTIFIED BY 'kt';
        GRANT ALL PRIVILEGES ON *.* TO 'kt'@'127.0.0.1';
        CREATE DATABASE IF NOT EXISTS kt;"
    echo "$port" >"$dir/port"
    echo "mysql://kt:kt@127.0.0.1:$port"
    ;;
stop)
    if [ -f "$dir/mysqld.pid" ]; then
        pid=$(cat "$dir/mysqld.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
    fi
    ;;
*)
    echo "usage: mariadb.sh start|stop DIR" >&2
    exit 2
    ;;
esac
