//! Loading the UCI handwritten-digits set shipped in `data/digits.csv.gz` (see data/README.md).

use std::io::Read;
use std::path::Path;

/// The images (each 64 pixels scaled from 0..=16 to 0..=1, row-major 8×8) and their labels.
#[derive(Debug)]
pub struct Digits {
    pub pixels: Vec<[f32; 64]>,
    pub labels: Vec<usize>,
}

/// Parses the gzip-compressed CSV: no header, 64 pixel columns then the label.
pub fn load(path: &Path) -> Result<Digits, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(flate2::read::GzDecoder::new(file))
}

/// Parses the CSV from any reader (already decompressed or not: see [`load`]).
pub fn parse(reader: impl Read) -> Result<Digits, String> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).from_reader(reader);
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for (line, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| format!("line {}: {e}", line + 1))?;
        if rec.len() != 65 {
            return Err(format!("line {}: {} fields, expected 65", line + 1, rec.len()));
        }
        let mut img = [0f32; 64];
        for (k, px) in img.iter_mut().enumerate() {
            let v: f32 = rec[k]
                .trim()
                .parse()
                .map_err(|e| format!("line {}, column {}: {e}", line + 1, k + 1))?;
            if !(0.0..=16.0).contains(&v) {
                return Err(format!("line {}, column {}: pixel {v} outside 0..=16", line + 1, k + 1));
            }
            *px = v / 16.0;
        }
        let label: f64 = rec[64]
            .trim()
            .parse()
            .map_err(|e| format!("line {}, label: {e}", line + 1))?;
        if label.fract() != 0.0 || !(0.0..=9.0).contains(&label) {
            return Err(format!("line {}: label {label} is not a digit", line + 1));
        }
        pixels.push(img);
        labels.push(label as usize);
    }
    Ok(Digits { pixels, labels })
}

/// The repository's copy of the data set.
#[allow(dead_code)]
pub fn default_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv.gz")
}
