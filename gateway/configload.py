"""Read config files (a path may be a folder) into YAML documents and build a routing table.

The only place config bytes are read and YAML is decoded; ``routing.parse_config`` does the
rest. Errors carry the file and document index, like every other config issue.

Objects read from a cluster's API (``gateway.kube``) join the files' documents. Files are all
or nothing, as ever; a cluster object with an error is left out, with the error kept as a
warning, and the rest applies: one bad HTTPRoute must not freeze every other object's
updates (pods coming and going) for as long as it stays in the cluster.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from gateway.tls import certificate_issues
from routing import RawDocument, RoutingTable, build_table, parse_config
from routing import model as m
from routing.backends import reads_object, referenced_objects
from routing.errors import ConfigError, ConfigIssue

__all__ = ["LoadedConfig", "config_files", "is_read", "load_config"]

_SUFFIXES = (".yaml", ".yml", ".json")
_CHECKOUT_PRESETS = Path(__file__).resolve().parent.parent / "config" / "presets"
_INSTALLED_PRESETS = Path("/etc/sluice/presets")


def builtin_preset_files() -> tuple[str, ...]:
    """The built-in model-server presets (config/presets, or /etc/sluice/presets in the
    image). They are read before the user's files, so a user preset of the same name wins."""
    for folder in (_CHECKOUT_PRESETS, _INSTALLED_PRESETS):
        if folder.is_dir():
            return config_files([str(folder)])
    return ()


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedConfig:
    table: RoutingTable
    warnings: tuple[ConfigIssue, ...]
    files: tuple[str, ...]


def config_files(paths: Sequence[str]) -> tuple[str, ...]:
    """Every config file named by ``paths``: files as given, folders' YAML files sorted."""
    out: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            for root, _dirs, names in sorted(os.walk(path)):
                out.extend(os.path.join(root, n) for n in sorted(names) if n.endswith(_SUFFIXES))
        else:
            out.append(path)
    return tuple(out)


def read_documents(files: Sequence[str]) -> list[RawDocument]:
    docs: list[RawDocument] = []
    issues: list[ConfigIssue] = []
    for file in files:
        try:
            with open(file, encoding="utf-8") as fh:
                text = fh.read()
            docs.extend(
                RawDocument(file=file, index=i, data=data)
                for i, data in enumerate(yaml.safe_load_all(text))
            )
        except OSError as exc:
            issues.append(
                ConfigIssue(file=file, document=0, path="", message=exc.strerror or str(exc))
            )
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            issues.append(
                ConfigIssue(file=file, document=0, path="", message=f"invalid YAML: {where}{exc}")
            )
    if issues:
        raise ConfigError(tuple(issues))
    return docs


def load_config(paths: Sequence[str], cluster: Sequence[RawDocument] | None = None) -> LoadedConfig:
    """Read, parse and compile; raises ``ConfigError`` listing every problem in the files.
    ``cluster``: the objects of a cluster's API, when Sluice reads one (then no file is
    needed); those with errors are left out and reported as warnings."""
    files = config_files(paths)
    if not files and cluster is None:
        raise ConfigError(
            (ConfigIssue(file=", ".join(paths), document=0, path="", message="no config files"),)
        )
    docs = read_documents(builtin_preset_files() + files)
    if cluster is None:
        config, warnings = parse_config(docs)
    else:
        config, warnings = _parse_with_cluster(docs, cluster)
    table = build_table(config)
    # a certificate that does not load: a file's refuses the reload, as any error in a
    # file; a cluster Secret's is a warning, and its listener is served without it
    bad = certificate_issues(table)
    if any(i.file in files for i in bad):
        raise ConfigError(tuple(i for i in bad if i.file in files))
    not_served = tuple(
        dataclasses.replace(i, message=f"{i.message} (certificate not served)", severity="warning")
        for i in bad
    )
    return LoadedConfig(table=table, warnings=warnings + table.issues + not_served, files=files)


def _parse_with_cluster(
    docs: list[RawDocument], cluster: Sequence[RawDocument]
) -> tuple[m.Config, tuple[ConfigIssue, ...]]:
    """Files and cluster objects; of the cluster's Pods, Services, EndpointSlices and
    Secrets, only those the rest uses (a pool selects the pod, a route or pool names the
    Service, a listener the Secret): a cluster has many more than Sluice serves, and each
    costs time at every rebuild."""
    used = [d for d in cluster if _kind(d) not in _ON_DEMAND]
    first, _ = _parse_isolated(docs, used)  # the pools and routes: what they read
    referenced = referenced_objects(first)
    wanted = [d for d in cluster if _kind(d) in _ON_DEMAND and is_read(d.data, first, referenced)]
    # all together again, so a file's object and a cluster's of one name meet (the later,
    # the cluster's, wins with a warning, as between two files)
    config, warnings = _parse_isolated(docs, used + wanted)
    return dataclasses.replace(config, from_cluster=True), warnings


_ON_DEMAND = frozenset({"Pod", "Service", "EndpointSlice", "Secret"})


def _parse_isolated(
    docs: list[RawDocument], cluster: Sequence[RawDocument]
) -> tuple[m.Config, tuple[ConfigIssue, ...]]:
    left_out: tuple[ConfigIssue, ...] = ()
    try:
        config, warnings = parse_config(docs + list(cluster))
    except ConfigError as exc:
        bad = {i.file for i in exc.issues if i.severity == "error"}
        if bad & {d.file for d in docs}:
            raise  # the files are wrong: nothing changes, as without a cluster
        left_out = tuple(
            dataclasses.replace(i, message=f"{i.message} (object left out)", severity="warning")
            for i in exc.issues
            if i.file in bad
        )
        config, warnings = parse_config(docs + [d for d in cluster if d.file not in bad])
    return config, left_out + warnings


def _kind(doc: RawDocument) -> object:
    return doc.data.get("kind") if isinstance(doc.data, dict) else None


def is_read(obj: object, config: m.Config, referenced: frozenset[tuple[str, str, str]]) -> bool:
    """Whether a table built from ``config`` reads the cluster object ``obj``: a Pod some
    pool selects, a Service (or its EndpointSlice) or Secret something names, any other
    kind. A malformed object is read, so the parser reports it."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(obj, dict) or not isinstance(meta, dict):
        return True
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        return True
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    return reads_object(config, referenced, str(obj.get("kind")), namespace, name, labels)
