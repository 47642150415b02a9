"""A run record's best-effort writes and helpers: the store link, job folder files, params flattening, timestamps."""
from __future__ import annotations

import json
import time

MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


class StoreLink:
    """One run's calls to the store: they go through until one fails; the store is then given up
    (later calls are skipped) and the job folder keeps the record for `python -m runner sync`."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id, self.failed = client, run_id, None

    def call(self, fn, *args, **kwargs) -> bool:
        if self.failed is not None:
            return False
        try:
            fn(*args, **kwargs)  # the helper retries a busy SQLite store itself
            return True
        except Exception as exc:  # the local record keeps everything; sync uploads it later
            self.failed = exc
            return False

    def close(self, status: str) -> bool:
        """The run's status, tried even after an earlier call failed (an artifact store that
        refused a file, a server that stumbled): a run is never left RUNNING for want of trying."""
        try:
            self.client.set_terminated(self.run_id, status)
            return True
        except Exception as exc:
            self.failed = self.failed or exc
            return False


def write_local(path, text: str, folder=None) -> bool:
    """A file of the job folder, best-effort: a full or read-only disk there must not stop the run
    or its record in MLflow (the first failure is kept on the JobFolder for the warning)."""
    try:
        path.write_text(text)
        return True
    except OSError as exc:
        if folder is not None and folder.error is None:
            folder.error = exc
        try:
            path.unlink()  # no half-written file for sync to upload
        except OSError:
            pass
        return False


def flatten(cfg: dict, prefix: str = "") -> dict[str, str]:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": "0.1"}: a run's params. Keys starting with '_' are internal."""
    out: dict[str, str] = {}
    for key, value in cfg.items():
        if str(key).startswith("_"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            out[name] = text[:MAX_PARAM_CHARS]
    return out


def config_yaml(cfg) -> str:
    """OmegaConf.to_yaml(cfg, resolve=True)'s text, written by libyaml's emitter where PyYAML has
    it (the same text, a fraction of the time: a batched sweep writes a thousand config.yaml)."""
    from omegaconf import OmegaConf

    dumper = _c_dumper()
    if dumper is None:
        return OmegaConf.to_yaml(cfg, resolve=True)
    import yaml

    return yaml.dump(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), default_flow_style=False, allow_unicode=True,
                     sort_keys=False, Dumper=dumper)


_dumper: list = []


def _c_dumper():
    """yaml.CDumper with OmegaConf's representers (its dumper is the pure-Python one); None without libyaml."""
    if not _dumper:
        import yaml
        from omegaconf._utils import get_omega_conf_dumper

        dumper = None
        if getattr(yaml, "__with_libyaml__", False):
            dumper = type("OmegaConfCDumper", (yaml.CDumper,), {})
            for kind, represent in get_omega_conf_dumper().yaml_representers.items():
                dumper.add_representer(kind, represent)
        _dumper.append(dumper)
    return _dumper[0]


def now_ms() -> int:
    return int(time.time() * 1000)
