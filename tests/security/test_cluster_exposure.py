"""Findings 2 and 4: cluster services open to the network without authentication, and
``ray job submit --working-dir .`` shipping secrets.

ray_cluster.yaml is read as the cluster launcher reads it: no service may bind 0.0.0.0 without
authentication (the dashboard and Jobs API on 127.0.0.1, every ``ray start`` with token auth and
a token made on the head and copied to the workers, MLflow behind its basic-auth app). The
working directory is packed by Ray's own packaging code, with and without ``.gitignore``, after
planting the usual secret files: none of them may be in the package."""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SECRETS = (".env", ".env.production", "deploy/prod.pem", "certs/server.key", ".aws/credentials", ".aws/config",
           "gcp-credentials.json", "configs/credentials.yaml", "sub/.env.local")
KEPT = ("core/module.py", "configs/default.yaml", "README.md", "docs/keys.md")


def cluster() -> dict:
    return yaml.safe_load((REPO / "ray_cluster.yaml").read_text(encoding="utf-8"))


def commands(config: dict) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    return [c for k in keys for c in (config.get(k) or [])]


def test_no_service_binds_every_interface_without_authentication():
    config = cluster()
    cmds = commands(config)
    starts = [c for c in cmds if "ray start" in c]
    assert starts and all(re.search(r"\bRAY_AUTH_MODE=token\b", c) for c in starts), starts
    heads = [c for c in starts if "--head" in c]
    assert heads and all("--dashboard-host=127.0.0.1" in c for c in heads), heads
    mlflow = [c for c in cmds if "mlflow server" in c]
    assert mlflow
    for c in mlflow:
        loopback = re.search(r"--host[ =](127\.0\.0\.1|localhost)\b", c)
        assert loopback or ("--app-name basic-auth" in c and "MLFLOW_AUTH_ADMIN_PASSWORD=" in c), c
    for c in cmds:  # anything on every interface is an authenticated service
        if "0.0.0.0" in c:
            assert "--app-name basic-auth" in c, f"binds 0.0.0.0 without authentication: {c}"


def test_ray_token_and_mlflow_password_are_random_made_on_the_head_and_shared_with_workers():
    config = cluster()
    head = "\n".join(config["head_setup_commands"])
    assert "ray get-auth-token --generate" in head and "chmod 600 ~/.ray/auth_token" in head
    assert "secrets.token_urlsafe" in head and "chmod 600 ~/.mlflow/password" in head
    assert {"~/.ray/auth_token", "~/.mlflow/password"} <= set(config["cluster_synced_files"])
    setup = "\n".join(config["setup_commands"])
    assert "export RAY_AUTH_MODE=token" in setup and "MLFLOW_TRACKING_PASSWORD=" in setup
    # No literal credential in the file itself: the password only ever comes from the head's file.
    assert not re.search(r"(PASSWORD|TOKEN)=(?!\"?\$\(cat )", "\n".join(commands(config)).replace("RAY_AUTH_MODE=", ""))


def test_cluster_sync_filters_secrets():
    config = cluster()
    assert {".gitignore", ".rayignore"} <= set(config["rsync_filter"])
    assert {"**/.env*", "**/*.pem", "**/*.key", "**/.aws", "**/*credentials*"} <= set(config["rsync_exclude"])


def _working_dir(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    for name in (*SECRETS, *KEPT):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("AKIA-PLANTED-SECRET\n" if name in SECRETS else "content\n", encoding="utf-8")
    for name in (".gitignore", ".rayignore"):
        if (REPO / name).is_file():
            shutil.copy(REPO / name, root / name)
    return root


@pytest.mark.parametrize("include_gitignore", [True, False], ids=["with-gitignore", "RAY_RUNTIME_ENV_IGNORE_GITIGNORE"])
def test_ray_job_package_holds_no_planted_secret(tmp_path, include_gitignore):
    from ray._private import ray_constants
    from ray._private.runtime_env.packaging import create_package

    root = _working_dir(tmp_path)
    package = tmp_path / "package.zip"
    create_package(str(root), package, include_gitignore=include_gitignore,
                   excludes=ray_constants.get_runtime_env_default_excludes())
    names = set(zipfile.ZipFile(package).namelist())
    leaked = [s for s in SECRETS if s in names]
    assert not leaked, f"packed: {leaked}"
    assert set(KEPT) <= names, sorted(names)
