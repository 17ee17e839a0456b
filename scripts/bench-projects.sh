# Sourced by scripts/bench-build and scripts/bench-buildkit so that forge and BuildKit build
# exactly the same projects. Expects $work (a scratch directory); sets $proj (the multi-stage
# project) and $big (the 280 MB context). Each builds FROM busybox.

# (1) a multi-stage project, no sleeps: every step does real work. A deps stage installs 2,000
# generated package files (the slow part of a cold build, as dependency installation is in
# real projects) and packs them; a build stage "compiles" each of 200 source modules (one
# process per module) against the deps; a test stage checks the build; the final stage takes
# the artifacts. The changed file is one source module, so the build stage's COPY and compile
# and everything after them run again; the deps stage stays cached.
proj=$work/multistage
mkdir -p "$proj/src"
for i in $(seq 1 200); do
    for j in $(seq 1 50); do echo "module $i line $j"; done >"$proj/src/mod$i.txt"
done
echo "v1" >"$proj/src/version.txt"
cat >"$proj/Dockerfile" <<'DF'
FROM busybox AS deps
WORKDIR /deps
RUN for p in $(seq 1 200); do mkdir -p pkg$p && for f in $(seq 1 10); do seq $p $((p + 400)) > pkg$p/file$f.js; done; done && tar -czf /deps.tgz . && md5sum /deps.tgz > /deps.md5
FROM busybox AS build
WORKDIR /src
COPY --from=deps /deps /deps
COPY src/ ./
RUN mkdir /out && for f in mod*.txt; do md5sum $f /deps/pkg1/file1.js > /out/$f.o; done && cat /out/*.o | md5sum > /build.md5
FROM build AS test
RUN test $(ls /out | wc -l) -eq 200 && touch /tested
FROM busybox
COPY --from=deps /deps.tgz /deps.md5 /app/
COPY --from=build /out /app/out
COPY --from=test /tested /app/
COPY src/version.txt /app/
CMD ["cat", "/app/version.txt"]
DF

# (2) a large context: 20,000 files, 280 MB.
big=$work/bigctx
python3 - "$big" <<'PY'
import os, sys
root = sys.argv[1]
total, n = 280 * 1000 * 1000, 20000
size = total // n
block = os.urandom(1 << 16)
for i in range(n):
    d = os.path.join(root, "data", f"d{i // 500:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}.bin"), "wb") as f:
        off = (i * 7919) % (len(block) - 1)
        data = (block[off:] + block) * (size // len(block) + 2)
        f.write(data[:size])
PY
cat >"$big/Dockerfile" <<'DF'
FROM busybox
COPY data /data
RUN du -sm /data
DF

# Write the generated 280 MB to disk now: a build that syncs what it stores (forge's snapshot
# commits call syncfs) would otherwise wait for this script's own dirty pages, which no real
# cold build starts with.
sync
