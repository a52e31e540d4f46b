#!/usr/bin/env bash
# Installs the servers that the test-suite starts by itself (tests/servers/):
#
#   Redis      Debian redis-server + redis-tools (redis-server, also run as Sentinel; redis-cli)
#   etcd       Debian etcd-server + etcd-client (etcd, etcdctl)
#   PostgreSQL Debian postgresql (initdb, postgres under /usr/lib/postgresql/N/bin; the
#              tests run them as the package's `postgres` user)
#   ZooKeeper  server jars from Maven Central  -> .services/zookeeper/libs
#   Kafka      broker jars from Maven Central  -> .services/kafka/libs (KRaft mode)
#   Curator    client jars from Maven Central  -> .services/curator/libs (the Java side of
#              the ZooKeeper interoperability test; scripts/curator/LockProbe.java)
#
# Usage: bash scripts/servers.sh install
#
# Idempotent: whatever is already installed or cached is left alone, so a second
# run takes a second or two. Needs root (or sudo) for apt-get on Debian 12.
# A server that LOCKKIT_TEST_<NAME>_URL points at is not installed (LOCKKIT_TEST_REDIS_URL,
# LOCKKIT_TEST_ZOOKEEPER_URL, LOCKKIT_TEST_ETCD_URL, LOCKKIT_TEST_KAFKA_BOOTSTRAP); the
# cluster fixtures still need the local binaries, so a full run wants everything.
# Versions: LOCKKIT_KAFKA_VERSION (default in scripts/kafka/pom.xml),
#           LOCKKIT_ZOOKEEPER_VERSION (default in scripts/zookeeper/pom.xml),
#           LOCKKIT_CURATOR_VERSION (default in scripts/curator/pom.xml).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVICES="${LOCKKIT_SERVICES_DIR:-$ROOT/.services}"

say() { printf 'servers: %s\n' "$*"; }
die() { printf 'servers: error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# --- Debian packages ---------------------------------------------------------------

APT_UPDATED=0
INSTALLED_PACKAGES=()

apt_install() {
    # apt_install PACKAGE... : install the missing ones, never starting their services.
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install ${missing[*]} by hand"
    if [[ $APT_UPDATED -eq 0 ]]; then
        say "apt-get update"
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
    say "apt-get install ${missing[*]}"
    # A policy-rc.d answering 101 keeps maintainer scripts from starting the services
    # (both invoke-rc.d and deb-systemd-invoke honour it); we start our own on free ports.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        added_policy=1
        trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    local rc=0
    as_root apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" >/dev/null || rc=$?
    if [[ $added_policy -eq 1 ]]; then
        as_root rm -f "$policy"
        trap - EXIT
    fi
    [[ $rc -eq 0 ]] || die "apt-get install ${missing[*]} failed (exit $rc)"
    INSTALLED_PACKAGES+=("${missing[@]}")
}

disable_service() {
    # disable_service NAME... : make sure a packaged service does not run or come back.
    local name
    for name in "$@"; do
        if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
            as_root systemctl disable --now "$name" >/dev/null 2>&1 || true
        elif [[ -x /etc/init.d/$name ]]; then
            as_root /etc/init.d/"$name" stop >/dev/null 2>&1 || true
            if command -v update-rc.d >/dev/null 2>&1; then
                as_root update-rc.d "$name" disable >/dev/null 2>&1 || true
            fi
        fi
    done
}

was_installed_now() {
    local pkg
    for pkg in "${INSTALLED_PACKAGES[@]+"${INSTALLED_PACKAGES[@]}"}"; do
        [[ $pkg == "$1" ]] && return 0
    done
    return 1
}

# --- Maven-fetched jars --------------------------------------------------------------

jar_count() {
    find "$1" -maxdepth 1 -name '*.jar' | wc -l
}

fetch_jars() {
    # fetch_jars NAME POM VERSION_PROPERTY VERSION : copy the runtime classpath into
    # $SERVICES/NAME/libs unless the stamp says it is already there for this pom + version.
    local name=$1 pom=$2 property=$3 version=$4
    local dest="$SERVICES/$name" stamp
    stamp="$(sha1sum "$pom" | cut -c1-12)-${version:-default}"
    if [[ -f $dest/.stamp && $(cat "$dest/.stamp") == "$stamp" ]] \
        && compgen -G "$dest/libs/*.jar" >/dev/null; then
        say "$name jars cached ($(jar_count "$dest/libs") jars in ${dest#"$ROOT"/})"
        return 0
    fi
    say "fetching $name jars${version:+ $version} from Maven Central"
    local args=(-B -ntp -Dstyle.color=never -f "$pom" dependency:copy-dependencies
        -DincludeScope=runtime -DoutputDirectory="$dest/libs.new")
    [[ -n $version ]] && args+=("-D$property=$version")
    rm -rf "$dest/libs.new"
    mkdir -p "$dest"
    local log="$dest/mvn.log"
    if ! mvn "${args[@]}" >"$log" 2>&1; then
        cat "$log" >&2
        die "mvn could not fetch the $name jars (see above)"
    fi
    rm -rf "$dest/libs"
    mv "$dest/libs.new" "$dest/libs"
    echo "$stamp" >"$dest/.stamp"
    say "$name jars ready ($(jar_count "$dest/libs") jars)"
}

ensure_java() {
    local need=()
    command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null 2>&1 || need+=(maven)
    [[ ${#need[@]} -eq 0 ]] || apt_install "${need[@]}"
    local major
    major=$(java -XshowSettings:properties -version 2>&1 \
        | sed -n 's/^ *java.specification.version = //p' | cut -d. -f1)
    [[ -n $major && $major -ge 17 ]] || die "Java 17 or newer is needed for Kafka 4 (found ${major:-none})"
}

# --- the servers ---------------------------------------------------------------------

redis_version() {
    redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'
}

install_redis() {
    if [[ -n ${LOCKKIT_TEST_REDIS_URL:-} ]]; then
        say "redis: LOCKKIT_TEST_REDIS_URL is set, not installing"
        return 0
    fi
    # Sentinels run as `redis-server FILE --sentinel`: Debian keeps the redis-sentinel
    # name in a package of its own that only adds a symlink and one more service.
    if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
        say "redis: $(redis_version) already installed"
        return 0
    fi
    apt_install redis-server redis-tools
    if was_installed_now redis-server; then
        disable_service redis-server
    fi
    say "redis: $(redis_version) installed"
}

install_etcd() {
    if [[ -n ${LOCKKIT_TEST_ETCD_URL:-} ]]; then
        say "etcd: LOCKKIT_TEST_ETCD_URL is set, not installing"
        return 0
    fi
    if command -v etcd >/dev/null && command -v etcdctl >/dev/null; then
        say "etcd: $(etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p') already installed"
        return 0
    fi
    apt_install etcd-server etcd-client
    if was_installed_now etcd-server; then
        disable_service etcd
    fi
    say "etcd: $(etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p') installed"
}

postgres_bin() {
    # The newest /usr/lib/postgresql/N/bin that has a server (Debian keeps it off PATH).
    local dir
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
    [[ -n $dir && -x $dir/postgres && -x $dir/initdb ]] && echo "$dir"
}

install_postgres() {
    if [[ -n ${LOCKKIT_TEST_POSTGRES_URL:-} ]]; then
        say "postgres: LOCKKIT_TEST_POSTGRES_URL is set, not installing"
        return 0
    fi
    local bin
    if bin=$(postgres_bin) && id -u postgres >/dev/null 2>&1; then
        say "postgres: $("$bin/postgres" --version | sed 's/^postgres //') already installed"
        return 0
    fi
    apt_install postgresql
    if was_installed_now postgresql; then
        disable_service postgresql
    fi
    bin=$(postgres_bin) || die "postgresql installed, but no server under /usr/lib/postgresql"
    say "postgres: $("$bin/postgres" --version | sed 's/^postgres //') installed"
}

install_zookeeper() {
    if [[ -n ${LOCKKIT_TEST_ZOOKEEPER_URL:-} ]]; then
        say "zookeeper: LOCKKIT_TEST_ZOOKEEPER_URL is set, not installing"
        return 0
    fi
    ensure_java
    fetch_jars zookeeper "$ROOT/scripts/zookeeper/pom.xml" zookeeper.version \
        "${LOCKKIT_ZOOKEEPER_VERSION:-}"
}

install_curator() {
    ensure_java
    fetch_jars curator "$ROOT/scripts/curator/pom.xml" curator.version \
        "${LOCKKIT_CURATOR_VERSION:-}"
}

install_kafka() {
    if [[ -n ${LOCKKIT_TEST_KAFKA_BOOTSTRAP:-} ]]; then
        say "kafka: LOCKKIT_TEST_KAFKA_BOOTSTRAP is set, not installing"
        return 0
    fi
    ensure_java
    fetch_jars kafka "$ROOT/scripts/kafka/pom.xml" kafka.version "${LOCKKIT_KAFKA_VERSION:-}"
}

main() {
    case "${1:-}" in
        install)
            local start=$SECONDS
            install_redis
            install_etcd
            install_postgres
            install_zookeeper
            install_curator
            install_kafka
            say "all servers ready in $((SECONDS - start))s"
            ;;
        *)
            echo "usage: $0 install" >&2
            exit 2
            ;;
    esac
}

main "$@"
