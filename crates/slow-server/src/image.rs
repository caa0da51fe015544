//! The built-in flag images: a deterministic, valid GIF per country code.
//!
//! Each image is a made-up flag (stripes, a cross, a canton, a disc, or a diagonal, in colours
//! picked from the code's hash) with the code itself written in a white panel in the middle,
//! so that no two codes give the same picture.

use std::borrow::Cow;

use crate::plan::fnv1a64;

/// Width of a flag image, in pixels.
pub(crate) const WIDTH: u16 = 240;
/// Height of a flag image, in pixels.
pub(crate) const HEIGHT: u16 = 160;

/// The palette: white, black, then the field colours.
const PALETTE: [[u8; 3]; 16] = [
    [0xff, 0xff, 0xff], // white
    [0x00, 0x00, 0x00], // black
    [0xce, 0x11, 0x26], // red
    [0x00, 0x38, 0xa8], // blue
    [0x00, 0x9a, 0x44], // green
    [0xfc, 0xd1, 0x16], // yellow
    [0xff, 0x88, 0x00], // orange
    [0x75, 0xaa, 0xdb], // sky blue
    [0x00, 0x5b, 0x2c], // dark green
    [0x80, 0x0d, 0x1f], // maroon
    [0x00, 0x20, 0x5b], // navy
    [0xd4, 0xaf, 0x37], // gold
    [0x6c, 0x2b, 0x8c], // purple
    [0x00, 0x7a, 0x87], // teal
    [0xf0, 0xf0, 0xe8], // off-white
    [0x3c, 0x3c, 0x3c], // charcoal
];
const WHITE: u8 = 0;
const BLACK: u8 = 1;
/// The field colours that can be drawn: every palette entry but white and black.
const FIELD: std::ops::Range<u8> = 2..16;

/// 5×7 glyphs for `A`..=`Z`, one byte per row, the five low bits left to right.
const GLYPHS: [[u8; 7]; 26] = [
    [
        0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001,
    ], // A
    [
        0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110,
    ], // B
    [
        0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110,
    ], // C
    [
        0b11110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b11110,
    ], // D
    [
        0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111,
    ], // E
    [
        0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000,
    ], // F
    [
        0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111,
    ], // G
    [
        0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001,
    ], // H
    [
        0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110,
    ], // I
    [
        0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100,
    ], // J
    [
        0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001,
    ], // K
    [
        0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111,
    ], // L
    [
        0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001,
    ], // M
    [
        0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001,
    ], // N
    [
        0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110,
    ], // O
    [
        0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000,
    ], // P
    [
        0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101,
    ], // Q
    [
        0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001,
    ], // R
    [
        0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110,
    ], // S
    [
        0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100,
    ], // T
    [
        0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110,
    ], // U
    [
        0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100,
    ], // V
    [
        0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010,
    ], // W
    [
        0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001,
    ], // X
    [
        0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100, 0b00100,
    ], // Y
    [
        0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111,
    ], // Z
];

/// A canvas of palette indices.
struct Canvas {
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(fill: u8) -> Self {
        Self {
            pixels: vec![fill; usize::from(WIDTH) * usize::from(HEIGHT)],
        }
    }

    /// Paints every pixel for which `inside(x, y)` holds.
    fn paint(&mut self, colour: u8, inside: impl Fn(i32, i32) -> bool) {
        let width = usize::from(WIDTH);
        for (i, pixel) in self.pixels.iter_mut().enumerate() {
            // Both coordinates are below 2^16, so they fit in an i32.
            let (x, y) = ((i % width) as i32, (i / width) as i32);
            if inside(x, y) {
                *pixel = colour;
            }
        }
    }
}

/// A small deterministic generator (SplitMix64) for the choices of one flag.
struct Choices(u64);

impl Choices {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Three different field colours.
    fn colours(&mut self) -> [u8; 3] {
        let mut pool: Vec<u8> = FIELD.collect();
        let mut picked = [0; 3];
        for slot in &mut picked {
            // The pool holds 14 entries, so the index fits in a usize.
            let index = self.below(pool.len() as u64) as usize;
            *slot = pool.swap_remove(index);
        }
        picked
    }
}

/// The GIF image of the country `cc` (two ASCII letters; other bytes are drawn as blanks).
pub(crate) fn flag_gif(cc: &str) -> Vec<u8> {
    let mut choices = Choices(fnv1a64(cc.to_ascii_uppercase().as_bytes()));
    let [a, b, c] = choices.colours();
    let (w, h) = (i32::from(WIDTH), i32::from(HEIGHT));
    let mut canvas = Canvas::new(a);
    match choices.below(7) {
        0 => {
            canvas.paint(b, |_, y| y >= h / 3);
            canvas.paint(c, |_, y| y >= 2 * h / 3);
        }
        1 => {
            canvas.paint(b, |x, _| x >= w / 3);
            canvas.paint(c, |x, _| x >= 2 * w / 3);
        }
        2 => canvas.paint(b, |_, y| y >= h / 2),
        3 => {
            let (cx, arm) = (w / 3, h / 8);
            canvas.paint(b, |x, y| (x - cx).abs() <= arm || (y - h / 2).abs() <= arm);
            canvas.paint(c, |x, y| {
                (x - cx).abs() <= arm / 2 || (y - h / 2).abs() <= arm / 2
            });
        }
        4 => {
            canvas.paint(b, |x, y| x * h > y * w);
            canvas.paint(c, |x, y| (x * h - y * w).abs() <= w * 10);
        }
        5 => {
            canvas.paint(b, |_, y| (y / (h / 8)) % 2 == 1);
            canvas.paint(c, |x, y| x < w * 2 / 5 && y < h / 2);
        }
        _ => {
            canvas.paint(b, |_, y| y >= h / 2);
            let r = h / 3;
            canvas.paint(c, |x, y| (x - w / 2).pow(2) + (y - h / 2).pow(2) <= r * r);
        }
    }
    wave(&mut canvas, choices.below(40) as i32 + 20);
    draw_code(&mut canvas, cc);
    encode(&canvas)
}

/// Shades the cloth in curved bands, as if the flag were waving: each pixel on a band takes the
/// darker twin of its colour (palette entry + 16). This also gives the image a realistic size.
fn wave(canvas: &mut Canvas, period: i32) {
    let width = usize::from(WIDTH);
    for (i, pixel) in canvas.pixels.iter_mut().enumerate() {
        let (x, y) = ((i % width) as i32, (i / width) as i32);
        let bend = (x - 120) * (x - 120) / 97 + y * y / 131;
        if ((x + y / 2 + bend) / (period / 4 + 3)) % 3 == 0 {
            *pixel += 16;
        }
    }
}

/// Writes `cc` in black on a white panel with a black border, in the middle of the flag.
fn draw_code(canvas: &mut Canvas, cc: &str) {
    const SCALE: i32 = 5;
    const GAP: i32 = SCALE * 2;
    const TEXT_W: i32 = 2 * 5 * SCALE + GAP;
    const TEXT_H: i32 = 7 * SCALE;
    const PAD: i32 = 8;
    let (w, h) = (i32::from(WIDTH), i32::from(HEIGHT));
    let (left, top) = ((w - TEXT_W) / 2, (h - TEXT_H) / 2);
    let panel = |x: i32, y: i32, margin: i32| {
        x >= left - margin
            && x < left + TEXT_W + margin
            && y >= top - margin
            && y < top + TEXT_H + margin
    };
    canvas.paint(BLACK, |x, y| panel(x, y, PAD + 2));
    canvas.paint(WHITE, |x, y| panel(x, y, PAD));
    let glyphs: Vec<Option<&[u8; 7]>> = cc
        .bytes()
        .take(2)
        .map(|byte| {
            let upper = byte.to_ascii_uppercase();
            upper
                .is_ascii_uppercase()
                .then(|| &GLYPHS[usize::from(upper - b'A')])
        })
        .collect();
    canvas.paint(BLACK, |x, y| {
        let (dx, dy) = (x - left, y - top);
        if dx < 0 || !(0..TEXT_H).contains(&dy) {
            return false;
        }
        let (letter, col) = (dx / (5 * SCALE + GAP), (dx % (5 * SCALE + GAP)) / SCALE);
        let Some(Some(glyph)) = glyphs.get(letter as usize) else {
            return false;
        };
        col < 5 && glyph[(dy / SCALE) as usize] & (0b10000 >> col) != 0
    });
}

/// Encodes the canvas as a single-frame GIF89a with a global palette.
fn encode(canvas: &Canvas) -> Vec<u8> {
    let shaded = PALETTE
        .iter()
        .map(|rgb| rgb.map(|channel| (u16::from(channel) * 7 / 8) as u8));
    let palette: Vec<u8> = PALETTE.iter().copied().chain(shaded).flatten().collect();
    let mut out = Vec::with_capacity(4096);
    let frame = gif::Frame {
        width: WIDTH,
        height: HEIGHT,
        buffer: Cow::Borrowed(&canvas.pixels),
        ..gif::Frame::default()
    };
    // Writing into a Vec cannot fail, and the palette and frame sizes are constants that the
    // GIF format accepts; the tests decode every image.
    let mut encoder =
        gif::Encoder::new(&mut out, WIDTH, HEIGHT, &palette).expect("a valid GIF header");
    encoder.write_frame(&frame).expect("a valid GIF frame");
    drop(encoder);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn decode(bytes: &[u8]) -> (u16, u16, Vec<u8>) {
        let mut options = gif::DecodeOptions::new();
        options.set_color_output(gif::ColorOutput::Indexed);
        let mut decoder = options.read_info(bytes).expect("a GIF header");
        let frame = decoder
            .read_next_frame()
            .expect("a frame")
            .expect("one frame");
        (frame.width, frame.height, frame.buffer.to_vec())
    }

    #[test]
    fn every_flag_is_a_valid_distinct_gif_of_a_few_kilobytes() {
        let mut pictures = HashSet::new();
        for cc in crate::country_codes() {
            let gif = flag_gif(cc);
            assert!(gif.starts_with(b"GIF89a"), "{cc}");
            assert!(
                (1_000..8_000).contains(&gif.len()),
                "{cc}: {} bytes",
                gif.len()
            );
            let (w, h, pixels) = decode(&gif);
            assert_eq!((w, h), (WIDTH, HEIGHT));
            assert!(pictures.insert(pixels), "{cc} looks like another flag");
        }
    }

    #[test]
    fn flags_are_deterministic_and_case_blind() {
        assert_eq!(flag_gif("BR"), flag_gif("BR"));
        assert_eq!(flag_gif("br"), flag_gif("BR"));
        assert_ne!(flag_gif("BR"), flag_gif("DE"));
    }

    #[test]
    fn odd_codes_do_not_panic() {
        for cc in ["", "a", "é!", "ZZZZ", "\0\0"] {
            assert!(flag_gif(cc).starts_with(b"GIF89a"));
        }
    }
}
