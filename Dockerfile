# pop3bridge container image. Build from the repository root:
#   docker build -t pop3bridge:0.1.0 .
# No `# syntax=` line: BuildKit would pull a frontend image for it, and nothing here needs more
# than the engine's own builders. CI builds it with the classic builder (DOCKER_BUILDKIT=0) and
# --network=host (tests/deploy/engine.py); docs/deploy.md says how it is built where no registry
# is reachable, and how to run it.

# ---- builder: resolve dependencies and install the package into a self-contained venv ----------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# The venv lives at the same path in both stages so its shebangs and scripts stay valid after COPY.
RUN python -m venv /opt/venv

COPY pyproject.toml README.md ./
COPY bridge ./bridge

# The `speed` extra (uvloop) is what `pop3bridge proxy` and `pop3bridge run` run on when installed.
# Then the venv loses what only installing needs (pip and setuptools: nothing imports them
# at run time); /opt/venv.size records its size before and after, in KiB, for the container
# tests to report. The root fs is read-only at run time, so bytecode must exist before then.
# "unchecked-hash" pycs stay valid no matter what mtimes COPY --from gives the files.
RUN /opt/venv/bin/pip install --no-cache-dir ".[speed]" \
 && echo "installed $(du -sk /opt/venv)" > /opt/venv.size \
 && /opt/venv/bin/python -m pip uninstall -y -q pip setuptools \
 && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv \
 && echo "runtime $(du -sk /opt/venv)" >> /opt/venv.size \
 && cat /opt/venv.size

# ---- runtime: the interpreter, the venv and nothing else ---------------------------------------
FROM python:3.11-slim-bookworm

# The runtime installs nothing: the base's own pip, setuptools and wheel go (the `|| true` is
# for a base whose interpreter has no pip at all), and so do the wheels ensurepip would install.
# The official slim image ships the stdlib without .pyc files; compile it once here for the same
# reason as the venv above (nothing may be written under / when the container runs).
# UID/GID 10001 are regular ids (not --system: those must lie below 1000, and useradd warns),
# with --no-log-init so a high UID does not make a huge sparse /var/log/lastlog.
RUN (python -m pip uninstall -y -q pip setuptools wheel 2>/dev/null || true) \
 && rm -rf /usr/local/lib/python3.11/ensurepip/_bundled /usr/share/python-wheels /root/.cache \
 && python -m compileall -q -j 0 --invalidation-mode unchecked-hash /usr/local/lib/python3.11 \
 && groupadd --gid 10001 pop3bridge \
 && useradd --uid 10001 --gid pop3bridge --home-dir /var/lib/pop3bridge \
      --no-create-home --no-log-init --shell /usr/sbin/nologin pop3bridge \
 && install -d -o pop3bridge -g pop3bridge -m 0750 /var/lib/pop3bridge \
 && install -d -o root -g root -m 0755 /etc/pop3bridge

COPY --from=builder /opt/venv /opt/venv

# POP3BRIDGE_OPS__HOST: the ops endpoint binds loopback by default, which a container's
# health checks and Prometheus cannot reach. POP3BRIDGE_ATTACHMENTS__BIND: likewise the attachment
# link listener, when the configuration enables it (it only listens then).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/pop3bridge \
    TMPDIR=/tmp \
    POP3BRIDGE_CONFIG=/etc/pop3bridge/config.yaml \
    POP3BRIDGE_OPS__HOST=0.0.0.0 \
    POP3BRIDGE_OPS__PORT=8080 \
    POP3BRIDGE_ATTACHMENTS__BIND=0.0.0.0

# The only path the process writes: SQLite state, and nothing else.
VOLUME ["/var/lib/pop3bridge"]
WORKDIR /var/lib/pop3bridge

# 8080: ops (/healthz /readyz /metrics /status). 8025: attachment links (attachments.enabled).
# 1110 and 1995: the proxy's conventional unprivileged listener ports (POP3 with STLS, and
# implicit TLS) used in the examples and the chart.
EXPOSE 8080 8025 1110 1995

# Numeric so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

# Docker has one health state, so it reports readiness (/readyz): the poller's state can be read
# and written, the proxy's listeners serve. (Kubernetes probes /healthz for liveness separately:
# restarting does not mend a full volume.) Slim images have no curl; the interpreter we ship
# does the request. Any failure (refused, timeout, non-2xx) raises: exit 1 = unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('POP3BRIDGE_OPS__PORT', '8080'), timeout=4).close()"]

ENTRYPOINT ["pop3bridge"]
CMD ["run"]
