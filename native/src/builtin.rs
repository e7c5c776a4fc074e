//! The photos `dino train` uses when no `--data` is given, embedded in the binary so that a
//! first run works anywhere (see assets/README.md).

use dino_core::data::ImageSource;
use dino_core::imaging::decode_image;
use image::RgbImage;

macro_rules! photos {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_bytes!(concat!("../assets/photos/", $name)) as &[u8])),*]
    };
}

static PHOTOS: &[(&str, &[u8])] = photos![
    "astronaut.jpg",
    "chelsea.jpg",
    "coffee.jpg",
    "rocket.jpg",
    "apple.jpg",
    "orange.jpg",
    "fruits.jpg",
    "butterfly.jpg",
    "building.jpg",
    "home.jpg",
    "squirrel_cls.jpg",
    "happyfish.jpg",
    "smarties.jpg",
    "aero1.jpg",
    "leuvena.jpg",
    "board.jpg",
    "basketball1.jpg",
    "rubberwhale1.jpg",
    "starry_night.jpg",
];

/// The embedded photos as an image source.
pub struct BuiltinPhotos;

impl ImageSource for BuiltinPhotos {
    fn len(&self) -> usize {
        PHOTOS.len()
    }

    fn load(&self, i: usize) -> Result<RgbImage, String> {
        decode_image(PHOTOS[i].1, PHOTOS[i].0).map_err(|e| e.to_string())
    }

    fn name(&self, i: usize) -> String {
        format!("built-in:{}", PHOTOS[i].0)
    }
}

/// The font of the plots.
pub static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
