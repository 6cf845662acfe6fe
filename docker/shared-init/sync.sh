#!/bin/sh
# Make DEST a copy of SRC: copy new and changed files, and delete files and
# folders that SRC no longer has. The shared_init container runs it on every
# `docker compose up` to fill the shared_web volume from shared/; the tests
# run it to fill their static root.
#
# Usage: sync.sh SRC DEST
# Each file is replaced by a rename, so a proxy reading DEST meanwhile sees
# the old file or the new one, never a part of one.
set -eu

if [ $# -ne 2 ]; then
    echo "usage: sync.sh SRC DEST" >&2
    exit 2
fi
src=$1
dest=$2
if [ ! -d "$src" ]; then
    echo "sync.sh: source folder not found: $src" >&2
    exit 1
fi
mkdir -p "$dest"

# Deepest paths first, so that a folder is empty by the time it is checked.
(cd "$dest" && find . -mindepth 1 -depth) | while IFS= read -r path; do
    if [ -d "$dest/$path" ] && [ ! -L "$dest/$path" ]; then
        [ -d "$src/$path" ] && continue
        rm -rf "$dest/$path"
    else
        [ -f "$src/$path" ] && continue
        rm -f "$dest/$path"
    fi
    echo "removed ${path#./}"
done

(cd "$src" && find . -mindepth 1 -type d) | while IFS= read -r path; do
    mkdir -p "$dest/$path"
done

(cd "$src" && find . -type f) | while IFS= read -r path; do
    if cmp -s "$src/$path" "$dest/$path"; then
        continue
    fi
    cp "$src/$path" "$dest/$path.sync-$$"
    # cp keeps the source's mode, and the proxies' users must read the file.
    chmod a+r "$dest/$path.sync-$$"
    mv -f "$dest/$path.sync-$$" "$dest/$path"
    echo "copied ${path#./}"
done
