"""What the sandbox pod contains: its names, environment and files, as plain data.

Everything here is derived from the plan (addresses) so tests can compare what a program sees
through mirrord-trace with what the pod really holds.
"""

from __future__ import annotations

import random

from mirrord_trace.sandbox.plan import (
    APP_PORT,
    POD_HOSTNAME,
    SEARCH_DOMAINS,
    SandboxPlan,
)

SERVICE_NAME = "api.default.svc.cluster.local"
SERVICE_BODY = f"hello from {SERVICE_NAME}\n"
APP_BODY = f"hello from {POD_HOSTNAME}\n"
DATABASE_URL = "postgres://db.default.svc.cluster.local:5432/app"
POD_ONLY_PYTHONPATH = "/pod/only"

LARGE_FILE = "/app/blob.bin"
LARGE_FILE_SIZE = 4 * 1024 * 1024
_LARGE_FILE_SEED = 0x6D697272  # fixed: the content (and so its sha256) is the same in every pod

ITEM_COUNT = 12

EXECUTABLES = frozenset({"/entrypoint.sh", "/app/www/cgi-bin/echo"})

# The busybox applets the pod's /bin offers, each a symlink to /bin/busybox.
BUSYBOX_APPLETS = (
    "sh", "ash", "cat", "cp", "cut", "echo", "env", "false", "grep", "head", "hostname", "httpd",
    "id", "ls", "mkdir", "nc", "nslookup", "printf", "readlink", "realpath", "rm", "sed",
    "sha256sum", "sleep", "stat", "tail", "tee", "test", "touch", "true", "uname", "wc", "wget",
)  # fmt: skip


def cluster_names(plan: SandboxPlan) -> dict[str, str]:
    return {
        "db.default.svc.cluster.local": plan.service_addr,
        SERVICE_NAME: plan.service_addr,
        "app.default.svc.cluster.local": plan.target_addr,
    }


def multi_names(plan: SandboxPlan) -> dict[str, list[str]]:
    # Like a headless service: one name, one A record per backing pod.
    return {"pods.default.svc.cluster.local": [plan.service_addr, plan.target_addr]}


def txt_records(plan: SandboxPlan) -> dict[str, str]:
    return {"app.default.svc.cluster.local": f"sandbox={plan.name}"}


def hosts_entries(plan: SandboxPlan) -> dict[str, str]:
    return {"legacy-api.internal": plan.service_addr, POD_HOSTNAME: plan.target_addr}


def pod_env(app_secret: str) -> dict[str, str]:
    return {
        "PATH": "/bin",
        "HOME": "/root",
        "HOSTNAME": POD_HOSTNAME,
        "DATABASE_URL": DATABASE_URL,
        "APP_SECRET": app_secret,
        "APP_MODE": "sandbox",
        # A language search path only valid inside the pod: mirrord-trace itself must not use it.
        "PYTHONPATH": POD_ONLY_PYTHONPATH,
    }


def _resolv_conf(plan: SandboxPlan) -> str:
    return (
        f"search {' '.join(SEARCH_DOMAINS)}\n"
        f"nameserver {plan.dns_addr}\n"
        # Kubernetes writes ndots:5; keeping it makes the sandbox resolve names the way pods do.
        "options ndots:5\n"
    )


def _hosts(plan: SandboxPlan) -> str:
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"{plan.target_addr}\t{POD_HOSTNAME}",
        f"{plan.service_addr}\tlegacy-api.internal legacy-api",
    ]
    return "\n".join(lines) + "\n"


def _config_yaml(plan: SandboxPlan) -> str:
    return (
        f"# configuration of the app in pod {POD_HOSTNAME} (sandbox {plan.name})\n"
        "service:\n"
        "  name: app\n"
        f"  port: {APP_PORT}\n"
        "database:\n"
        f"  url: {DATABASE_URL}\n"
        "upstream:\n"
        f"  api: http://{SERVICE_NAME}/\n"
        "features:\n"
        "  - greeting\n"
        "  - items\n"
    )


# Busybox httpd runs this for /cgi-bin/echo; it shows what reached the app.
_CGI_ECHO = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
echo "method=$REQUEST_METHOD"
echo "uri=$REQUEST_URI"
echo "remote=$REMOTE_ADDR"
echo "hostname=$(hostname)"
if [ -n "$CONTENT_LENGTH" ]; then
    echo "body-sha256=$(head -c "$CONTENT_LENGTH" | sha256sum | cut -d' ' -f1)"
fi
"""

_ENTRYPOINT = f"""#!/bin/sh
# The app container's entrypoint: take the pod's hostname, then become the app server.
hostname -F /etc/hostname
exec httpd -f -v -p {APP_PORT} -h /app/www
"""


def text_files(plan: SandboxPlan) -> dict[str, str]:
    files = {
        "/etc/hostname": f"{POD_HOSTNAME}\n",
        "/etc/hosts": _hosts(plan),
        "/etc/resolv.conf": _resolv_conf(plan),
        "/etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
        "/etc/passwd": (
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        ),
        "/etc/group": "root:x:0:\nnogroup:x:65534:\n",
        "/entrypoint.sh": _ENTRYPOINT,
        "/app/config.yaml": _config_yaml(plan),
        "/app/data/greeting.txt": f"hello from pod {POD_HOSTNAME}\n",
        "/app/www/index.html": APP_BODY,
        "/app/www/cgi-bin/echo": _CGI_ECHO,
        f"{POD_ONLY_PYTHONPATH}/pod_only_module.py": (
            "# Exists only in the pod: importing it from the local side would be a bug.\n"
            'WHERE = "pod"\n'
        ),
    }
    for number in range(1, ITEM_COUNT + 1):
        files[f"/app/data/items/item-{number:02d}.txt"] = f"item {number}\n"
    return files


def symlinks() -> dict[str, str]:
    return {
        "/app/current": "data",
        "/app/config-link.yaml": "/app/config.yaml",
        "/app/data/latest": f"items/item-{ITEM_COUNT:02d}.txt",
    }


def large_file_bytes() -> bytes:
    # Random-looking rather than zeros so an offset mistake changes the hash.
    return random.Random(_LARGE_FILE_SEED).randbytes(LARGE_FILE_SIZE)
