//! A minimal PNG writer for `bench-echo`'s latency plot: 8-bit RGB, no compression (zlib
//! stored blocks), CRC-32 and Adler-32 by hand. Chosen over the `plotters` crate because the
//! plot needs only lines and rectangles on a canvas, and plotters' bitmap backend brings an
//! image codec and font stack into xtask (which every `cargo xtask` invocation builds) for
//! that. A 1200×900 plot stored uncompressed is about 3 MiB, written under `target/` only.

/// An RGB canvas.
pub struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<[u8; 3]>,
}

impl Canvas {
    /// A `width`×`height` canvas filled with `background`.
    pub fn new(width: usize, height: usize, background: [u8; 3]) -> Self {
        Self {
            width,
            height,
            pixels: vec![background; width * height],
        }
    }

    /// Sets one pixel; outside the canvas does nothing.
    pub fn set(&mut self, x: i64, y: i64, color: [u8; 3]) {
        if let (Ok(x), Ok(y)) = (usize::try_from(x), usize::try_from(y))
            && x < self.width
            && y < self.height
        {
            self.pixels[y * self.width + x] = color;
        }
    }

    /// Fills the rectangle from (`x`, `y`), `w`×`h` pixels.
    pub fn fill(&mut self, x: i64, y: i64, w: i64, h: i64, color: [u8; 3]) {
        for dy in 0..h {
            for dx in 0..w {
                self.set(x + dx, y + dy, color);
            }
        }
    }

    /// A line `thickness` pixels wide from (`x0`, `y0`) to (`x1`, `y1`).
    pub fn line(&mut self, from: (i64, i64), to: (i64, i64), thickness: i64, color: [u8; 3]) {
        let (x0, y0) = from;
        let (x1, y1) = to;
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
        for i in 0..=steps {
            let x = x0 + (x1 - x0) * i / steps;
            let y = y0 + (y1 - y0) * i / steps;
            self.fill(
                x - thickness / 2,
                y - thickness / 2,
                thickness,
                thickness,
                color,
            );
        }
    }

    /// Writes `text` (upper-case letters, digits, space, `.`, `/`, `-`, `:`; anything else
    /// is drawn as a space) with its top left at (`x`, `y`), each font pixel `scale` pixels.
    pub fn text(&mut self, x: i64, y: i64, scale: i64, text: &str, color: [u8; 3]) {
        for (i, c) in text.chars().enumerate() {
            let left = x + i64::try_from(i).unwrap_or(0) * 4 * scale;
            for (row, bits) in glyph(c).iter().enumerate() {
                for column in 0..3 {
                    if bits & (0b100 >> column) != 0 {
                        let top = y + i64::try_from(row).unwrap_or(0) * scale;
                        self.fill(left + column * scale, top, scale, scale, color);
                    }
                }
            }
        }
    }

    /// How many pixels have `color` (for tests).
    #[cfg(test)]
    pub fn count(&self, color: [u8; 3]) -> usize {
        self.pixels.iter().filter(|p| **p == color).count()
    }

    /// The canvas as a PNG file's bytes.
    pub fn to_png(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity((self.width * 3 + 1) * self.height);
        for row in self.pixels.chunks(self.width) {
            raw.push(0); // filter: none
            for pixel in row {
                raw.extend_from_slice(pixel);
            }
        }
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut header = Vec::new();
        header.extend_from_slice(&u32::try_from(self.width).unwrap_or(0).to_be_bytes());
        header.extend_from_slice(&u32::try_from(self.height).unwrap_or(0).to_be_bytes());
        header.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
        chunk(&mut png, *b"IHDR", &header);
        chunk(&mut png, *b"IDAT", &zlib_stored(&raw));
        chunk(&mut png, *b"IEND", &[]);
        png
    }
}

/// A 3×5 glyph, one row of three bits (left = 0b100) per entry.
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_uppercase() {
        '0' | 'O' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' | 'S' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b001, 0b001, 0b001],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        'A' => [0b010, 0b101, 0b111, 0b101, 0b101],
        'B' => [0b110, 0b101, 0b110, 0b101, 0b110],
        'C' => [0b111, 0b100, 0b100, 0b100, 0b111],
        'D' => [0b110, 0b101, 0b101, 0b101, 0b110],
        'E' => [0b111, 0b100, 0b110, 0b100, 0b111],
        'F' => [0b111, 0b100, 0b110, 0b100, 0b100],
        'G' => [0b111, 0b100, 0b101, 0b101, 0b111],
        'I' => [0b111, 0b010, 0b010, 0b010, 0b111],
        'K' => [0b101, 0b101, 0b110, 0b101, 0b101],
        'L' => [0b100, 0b100, 0b100, 0b100, 0b111],
        'M' => [0b101, 0b111, 0b111, 0b101, 0b101],
        'N' => [0b110, 0b101, 0b101, 0b101, 0b101],
        'P' => [0b111, 0b101, 0b111, 0b100, 0b100],
        'R' => [0b110, 0b101, 0b110, 0b101, 0b101],
        'T' => [0b111, 0b010, 0b010, 0b010, 0b010],
        'U' => [0b101, 0b101, 0b101, 0b101, 0b111],
        'V' => [0b101, 0b101, 0b101, 0b101, 0b010],
        'W' => [0b101, 0b101, 0b111, 0b111, 0b101],
        'X' => [0b101, 0b101, 0b010, 0b101, 0b101],
        'Y' => [0b101, 0b101, 0b010, 0b010, 0b010],
        '.' => [0, 0, 0, 0, 0b010],
        '/' => [0b001, 0b001, 0b010, 0b100, 0b100],
        '-' => [0, 0, 0b111, 0, 0],
        ':' => [0, 0b010, 0, 0b010, 0],
        _ => [0; 5],
    }
}

fn chunk(png: &mut Vec<u8>, kind: [u8; 4], data: &[u8]) {
    png.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_be_bytes());
    let start = png.len();
    png.extend_from_slice(&kind);
    png.extend_from_slice(data);
    let crc = crc32(&png[start..]);
    png.extend_from_slice(&crc.to_be_bytes());
}

/// A zlib stream of stored (uncompressed) deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let mut blocks = data.chunks(65_535).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let len = u16::try_from(block.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_their_reference_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        // Every letter of the servers' names has a glyph (a blank one means a missing glyph).
        for c in "ours-dpc ours-passive floor tokio std wine-ours wine-floor".chars() {
            assert!(c == ' ' || glyph(c) != [0; 5], "{c:?} has no glyph");
        }
    }

    #[test]
    fn a_png_has_its_signature_header_and_end() {
        let mut canvas = Canvas::new(3, 2, [255, 255, 255]);
        canvas.line((0, 0), (2, 1), 1, [255, 0, 0]);
        let png = canvas.to_png();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(&png[16..20], &3u32.to_be_bytes());
        assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
        // Rows of 1 filter byte + 3 pixels × 3 bytes, stored in one block.
        let raw_len = 2 * (1 + 9);
        assert!(png.len() > raw_len + 8 + 25 + 12);
    }
}
