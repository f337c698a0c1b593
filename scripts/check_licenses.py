"""Reads `cargo metadata` JSON on stdin; exits 1 if a third-party crate's license is not
reviewed. Called by scripts/check-licenses; the review is docs/decisions/licenses.md."""
import json
import re
import sys

# SPDX identifiers reviewed as permissive for the appliance.
PERMISSIVE = {"MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "Zlib", "Unlicense", "ISC",
              "Unicode-3.0", "BSL-1.0", "CC0-1.0", "0BSD", "LLVM-exception"}
# Crates whose (non-permissive) license was reviewed one by one.
REVIEWED = {("xdpilone", "EUPL-1.2")}


def acceptable(lic: str) -> bool:
    # "A OR B" / "A/B": one acceptable choice is enough; "A AND B" / "A WITH B": all parts.
    for alt in re.split(r"\s+OR\s+|/", lic.replace("(", "").replace(")", "")):
        parts = [x.strip() for x in re.split(r"\s+AND\s+|\s+WITH\s+", alt) if x.strip()]
        if parts and all(x in PERMISSIVE for x in parts):
            return True
    return False


meta = json.load(sys.stdin)
third_party = [p for p in meta["packages"] if p["source"] is not None]
bad = [f"{p['name']} {p['version']}: {p.get('license') or 'no license field'}"
       for p in third_party
       if (p["name"], p.get("license")) not in REVIEWED and not acceptable(p.get("license") or "")]
if bad:
    print("check-licenses: licenses not reviewed (see docs/decisions/licenses.md):")
    print("\n".join("  " + b for b in sorted(bad)))
    sys.exit(1)
print(f"check-licenses: {len(third_party)} third-party crates, all licenses reviewed")
