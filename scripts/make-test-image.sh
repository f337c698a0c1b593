#!/usr/bin/env bash
# Builds the real-data inputs for the HDE benchmarks:
#   <dir>/image-v1.ext4  a 256 MiB ext4 image holding ~200 MiB of real files (< 16 MiB each,
#                        one per inode, seeded shuffle) from /usr/lib/x86_64-linux-gnu and
#                        /usr/share (mkfs.ext4 -d, fixed UUID/hash seed/time)
#   <dir>/image-v2.ext4  a copy of v1 with 5 % of its 4 KiB blocks changed: half are partial
#                        edits (16..512 bytes rewritten at a random offset), half are whole-block
#                        rewrites; the new bytes come from real files that are not in the image.
#   <dir>/changes.txt    the changed block numbers and kinds.
# Usage: scripts/make-test-image.sh [dir]   (default: <repo>/target/test-images)
# Env: SRC (space-separated source trees), IMAGE_MIB (256), FILL_MIB (200), CHANGE_PERMILLE (50), SEED (7470).
# Needs: e2fsprogs (mkfs.ext4), coreutils, gawk or mawk.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$repo/target/test-images}"
src="${SRC:-/usr/lib/x86_64-linux-gnu /usr/share}"
image_mib="${IMAGE_MIB:-256}"
fill_mib="${FILL_MIB:-200}"
permille="${CHANGE_PERMILLE:-50}"
seed="${SEED:-7470}"
command -v mkfs.ext4 >/dev/null || { echo "make-test-image: mkfs.ext4 missing (apt-get install e2fsprogs)" >&2; exit 1; }

mkdir -p "$out"
tmp="$(mktemp -d "$out/build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# Regular files under the source trees (one path per inode: hard links such as Mesa's
# dri/*.so would otherwise fill the image with copies of one file), in a shuffled but
# seed-determined order, split into the image tree (first fill_mib MiB) and a pool of
# unrelated real bytes for the changed blocks.
echo "make-test-image: selecting ~${fill_mib} MiB of files from $src"
# shellcheck disable=SC2086
find $src -xdev -type f -readable -size -16M -printf '%i\t%s\t%p\n' | LC_ALL=C sort -t$'\t' -k3 \
  | awk -F'\t' '!seen[$1]++ { print $2 "\t" $3 }' \
  | shuf --random-source=<(yes "$seed") >"$tmp/files"
# (sizes counted in whole 4 KiB blocks, as the file system allocates them)
awk -F'\t' -v lim=$((fill_mib * 1048576)) '{ b = int(($1 + 4095) / 4096) * 4096
  if (sum + b <= lim) { sum += b; print $2 > "/dev/stdout" } else print $2 > "/dev/stderr" }' \
  "$tmp/files" >"$tmp/in-image" 2>"$tmp/in-pool"
mkdir -p "$tmp/tree"
tr '\n' '\0' <"$tmp/in-image" | xargs -0 cp --parents -t "$tmp/tree"
# (cat is cut off by head: SIGPIPE there is expected)
(tr '\n' '\0' <"$tmp/in-pool" | xargs -0 cat 2>/dev/null || true) | head -c $((64 * 1048576)) >"$tmp/pool"
pool_blocks=$(( $(stat -c %s "$tmp/pool") / 4096 ))
((pool_blocks > 16)) || { echo "make-test-image: not enough pool data under $src" >&2; exit 1; }

echo "make-test-image: mkfs.ext4 -d (${image_mib} MiB)"
rm -f "$out/image-v1.ext4"
E2FSPROGS_FAKE_TIME=1700000000 mkfs.ext4 -q -F -b 4096 -i 8192 -t ext4 \
  -U 6b0d2a5e-7470-4d57-9c3a-000000007470 -E hash_seed=6b0d2a5e-7470-4d57-9c3a-000000000001,root_owner=0:0 \
  -d "$tmp/tree" "$out/image-v1.ext4" "${image_mib}M"

echo "make-test-image: writing v2 with ${permille}/1000 of the blocks changed"
cp "$out/image-v1.ext4" "$tmp/image-v2.ext4"
blocks=$(( image_mib * 256 ))
# One line per changed block: block kind pool_block offset length (deterministic for a seed).
awk -v n="$blocks" -v pm="$permille" -v pb="$pool_blocks" -v seed="$seed" 'BEGIN {
  srand(seed); want = int(n * pm / 1000); got = 0
  while (got < want) {
    b = int(rand() * n); if (b in seen) continue; seen[b] = 1; got++
    p = int(rand() * pb)
    if (rand() < 0.5) { len = 16 + int(rand() * 497); off = int(rand() * (4096 - len)); print b, "edit", p, off, len }
    else print b, "rewrite", p, 0, 4096
  } }' | sort -n >"$out/changes.txt"
while read -r b kind p off len; do
  dd if="$tmp/pool" of="$tmp/image-v2.ext4" bs=1 count="$len" skip=$((p * 4096 + off)) \
    seek=$((b * 4096 + off)) conv=notrunc iflag=skip_bytes,count_bytes oflag=seek_bytes status=none
done <"$out/changes.txt"
mv "$tmp/image-v2.ext4" "$out/image-v2.ext4"
echo "make-test-image: $(wc -l <"$out/changes.txt") blocks changed"
ls -l "$out"/image-v*.ext4
