"""One-off migration (issue 29, item 1): give the committed records made before data digests existed the digest of
the data they ran on, so they keep their identity under the new rule instead of all going stale.

Only a record that was current under the previous code is stamped (`--current`: a JSON map of record file ->
staleness reason, written by the previous code; None = current), and only when every data file it reads is,
byte for byte, the file the offline pack's `manifest.json` lists (the pack is read-only and was never rebuilt, so
those are the files the records ran on; scikit-learn's digits are stamped with the values installed now). The
stamp is said in the record (`extras["data_digests_stamped"]`); its value, timings and provenance are untouched.
The record's file gets the new identity's name (the old file is removed).

    python scripts/restamp_data_digests.py docs/results --pack ../shared/data --current old_current.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lorabench.hashing import digest_file
from lorabench.identity import data_digests, identify, staleness
from lorabench.results import load_results, write_result
from lorabench.specs import ResultRecord, RunConfig

NOTE = ("added after the run by scripts/restamp_data_digests.py: every file the cell reads matched the offline pack's "
        "manifest.json sha256 (builtin digits: the values installed when stamped)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", type=Path)
    ap.add_argument("--pack", type=Path, required=True)
    ap.add_argument("--current", type=Path, required=True)
    args = ap.parse_args()
    manifest = json.loads((args.pack / "manifest.json").read_text())
    published = {f"sha256:{s['sha256']}" for d in manifest["datasets"].values() for s in d["splits"].values()}
    for rel, split in ((s["file"], s) for d in manifest["datasets"].values() for s in d["splits"].values()):
        assert f"sha256:{digest_file(args.pack / rel)}" == f"sha256:{split['sha256']}", f"{rel} is not the pack's file"
    current = json.loads(args.current.read_text())
    stamped = kept = 0
    for record in load_results(args.results)[0]:
        rel = f"{record.task}/{record.method}__{record.backbone}__k{record.k}__s{record.seed}__{record.config_hash}.json"
        if current.get(rel, "unknown") is not None or record.config.get("data"):
            kept += 1
            continue
        fields = {k: v for k, v in record.config.items() if k in RunConfig.model_fields and k != "digest"}
        cfg = RunConfig.model_validate({**fields, "data_dir": str(args.pack)})
        data = data_digests(cfg)
        unknown = {k: v for k, v in data.items() if not k.startswith("builtin/") and v not in published}
        assert not unknown, f"{rel}: data not in the pack's manifest: {unknown}"
        new = identify(cfg)
        doc = record.model_dump(mode="json")
        doc["config"] = {**doc["config"], "data": new.data, "digest": new.digest}
        doc["config_hash"] = new.digest
        doc["extras"] = {**doc["extras"], "data_digests_stamped": NOTE}
        out = ResultRecord.model_validate(doc)
        assert staleness(out) is None, f"{rel}: {staleness(out)}"
        old_path = args.results / rel
        new_path = old_path.with_name(old_path.name.replace(record.config_hash, new.digest))
        write_result(out, new_path)
        old_path.unlink()
        stamped += 1
    print(f"stamped {stamped} records; left {kept} as they were (stale before, or stamped already)")


if __name__ == "__main__":
    main()
