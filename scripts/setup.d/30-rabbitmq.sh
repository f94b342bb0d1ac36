#!/bin/sh
# RabbitMQ for the bus tests (tests/it/bus.rs): Debian's rabbitmq-server, installed WITHOUT starting the
# system service (the tests start a private node on 127.0.0.1 and stop it). Idempotent and quiet.
set -e
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "30-rabbitmq: not root or no apt-get; install rabbitmq-server yourself" >&2
    exit 1
fi
created_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq rabbitmq-server >/dev/null
[ -n "$created_policy" ] && rm -f /usr/sbin/policy-rc.d
exit 0
