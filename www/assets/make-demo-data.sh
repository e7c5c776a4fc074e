#!/usr/bin/env bash
# Assembles the 58 real photos the bundled demo model was trained on, all from packages that
# install offline: OpenCV's example images (Debian opencv-doc), scikit-image's sample photos
# (its PyPI wheel), the CLI's 19 built-in photos and 5 frames of OpenCV's vtest.avi.
#
#   bash www/assets/make-demo-data.sh /tmp/demo-data     # needs apt-get, pip, ffmpeg
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="$(mkdir -p "${1:-demo-data}" && cd "${1:-demo-data}" && pwd)"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"

apt-get download opencv-doc >/dev/null
dpkg-deb -x opencv-doc_*.deb ocv
D=ocv/usr/share/doc/opencv-doc/examples/data
for f in Blender_Suzanne1.jpg Blender_Suzanne2.jpg HappyFish.jpg aero1.jpg aero3.jpg aloeL.jpg \
    apple.jpg baboon.jpg basketball1.png board.jpg box_in_scene.png building.jpg butterfly.jpg \
    cards.png chicky_512.png ela_original.jpg fruits.jpg graf1.png home.jpg left.jpg leuvenA.jpg \
    licenseplate_motion.jpg messi5.jpg orange.jpg pca_test1.jpg rubberwhale1.png smarties.png \
    squirrel_cls.jpg starry_night.jpg stuff.jpg; do
    cp "$D/$f" "$OUT/"
done

pip download --quiet --no-deps --only-binary :all: scikit-image==0.26.0 -d wheel
python3 -m zipfile -e wheel/scikit_image-*.whl sk
for f in astronaut.png camera.png chelsea.png coffee.png coins.png color.png gravel.png brick.png \
    grass.png hubble_deep_field.jpg motorcycle_left.png retina.jpg rocket.jpg ihc.png; do
    cp "sk/skimage/data/$f" "$OUT/sk_$f"
done

# the built-in photos replace OpenCV's copies of the same pictures
cp "$ROOT"/native/assets/photos/*.jpg "$OUT/"
for t in 1 3 5 7 9; do
    ffmpeg -loglevel error -y -ss "$t" -i "$D/vtest.avi" -frames:v 1 "$OUT/vtest_$t.png"
done
echo "$(ls "$OUT" | wc -l) photos in $OUT"
