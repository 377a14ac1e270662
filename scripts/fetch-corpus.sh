#!/usr/bin/env bash
# Fetch the offline photo / astronomy corpora from Debian packages (no install needed:
# apt-get download + dpkg-deb -x). Used to train the default prior and by the benchmarks.
# Usage: scripts/fetch-corpus.sh [DEST]   (default: ~/.cache/restoreflow/corpus)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)  # absolute: the script cds below
dest=${1:-${RESTOREFLOW_CORPUS_DIR:-$HOME/.cache/restoreflow/corpus}}
mkdir -p "$dest/debs"
pkgs="stellarium-data plasma-workspace-wallpapers mate-backgrounds ukui-wallpapers lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 gnome-backgrounds opencv-doc gcompris-qt-data"
cd "$dest/debs"
if [ ! -f .updated ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq; else sudo apt-get update -qq || true; fi
  touch .updated
fi
for p in $pkgs; do
  if ! ls "${p}"_*.deb >/dev/null 2>&1; then apt-get download -qq "$p"; fi
  [ -d "$dest/$p" ] || dpkg-deb -x "${p}"_*.deb "$dest/$p"
done
# Photos never trained on, for the conformal benchmark (scripts/rcc_photos.py).
if [ ! -d "$dest/gcompris-photos" ]; then
  "${PYTHON:-$here/../.venv/bin/python}" "$here/rcc_photos.py" \
    "$dest/gcompris-qt-data/usr/share/gcompris-qt/rcc" "$dest/gcompris-photos.part"
  mv "$dest/gcompris-photos.part" "$dest/gcompris-photos"
fi
echo "corpus in $dest"
