//! Compression formats: names as LAVA jobs spell them, detection from magic bytes, and the
//! streaming decoders. The bytes come from the network, so detection and decoding treat them as
//! hostile: a wrong or corrupt stream is an error, never a panic or an unbounded allocation
//! (the fuzz target `images_magic` drives [`fuzz_decode`]).

use std::fmt;
use std::io::{self, BufRead, Read};
use std::str::FromStr;

/// A compression format labd decodes while downloading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gz,
    Xz,
    Bz2,
    Zstd,
}

impl Compression {
    pub const ALL: [Compression; 4] = [Self::Gz, Self::Xz, Self::Bz2, Self::Zstd];

    /// The name LAVA jobs use in `compression:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gz => "gz",
            Self::Xz => "xz",
            Self::Bz2 => "bz2",
            Self::Zstd => "zstd",
        }
    }

    /// The usual file suffix, e.g. for test data and for dropping it from a file name.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Gz => ".gz",
            Self::Xz => ".xz",
            Self::Bz2 => ".bz2",
            Self::Zstd => ".zst",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `compression:` value labd refuses, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressionNameError {
    #[error(
        "compression 'zip' is an archive, not a stream: labd does not unpack it while downloading"
    )]
    Zip,
    #[error("unknown compression {0:?} (expected gz, xz, bz2, zstd, auto or none)")]
    Unknown(String),
}

/// What to do with the downloaded bytes: what a job's `compression:` field says, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Decompress {
    /// Decode if the stream starts with a known magic number, else keep it as is.
    #[default]
    Auto,
    /// Keep the bytes as downloaded (a LAVA job without `compression:`).
    None,
    /// The stream must be in this format; anything else is an error.
    Format(Compression),
}

impl FromStr for Decompress {
    type Err = CompressionNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Self::Auto,
            "none" | "" => Self::None,
            "gz" | "gzip" => Self::Format(Compression::Gz),
            "xz" => Self::Format(Compression::Xz),
            "bz2" | "bzip2" => Self::Format(Compression::Bz2),
            "zstd" | "zst" => Self::Format(Compression::Zstd),
            "zip" => return Err(CompressionNameError::Zip),
            _ => return Err(CompressionNameError::Unknown(s.to_string())),
        })
    }
}

impl fmt::Display for Decompress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::None => f.write_str("none"),
            Self::Format(c) => c.fmt(f),
        }
    }
}

/// Bytes [`detect`] may need to decide.
pub const MAGIC_LEN: usize = 6;

/// The outcome of looking at the first bytes of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    Format(Compression),
    /// Not a format labd knows: the bytes are kept as they are.
    Plain,
    /// Too few bytes to tell; call again with more (or with `at_eof`).
    NeedMore,
}

/// Identifies the format from the first bytes. Shorter inputs give `NeedMore` unless `at_eof`.
pub fn detect(prefix: &[u8], at_eof: bool) -> Detection {
    const XZ: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0x00];
    const ZSTD: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    /// Bytes a rule needs, the test on a prefix that long, the format it identifies.
    type Rule = (usize, fn(&[u8]) -> bool, Compression);
    let rules: [Rule; 4] = [
        // gzip: ID1 ID2 and CM = 8 (deflate), the only method RFC 1952 defines.
        (3, |p| p[..3] == [0x1f, 0x8b, 0x08], Compression::Gz),
        (6, |p| p[..6] == XZ, Compression::Xz),
        // bzip2: "BZh" and a block size digit 1-9.
        (
            4,
            |p| &p[..3] == b"BZh" && (b'1'..=b'9').contains(&p[3]),
            Compression::Bz2,
        ),
        // zstd frame, or a skippable frame (magic 0x184D2A50-5F, little endian).
        (
            4,
            |p| p[..4] == ZSTD || (p[0] & 0xf0 == 0x50 && p[1..4] == [0x2a, 0x4d, 0x18]),
            Compression::Zstd,
        ),
    ];
    let mut undecided = false;
    for (need, matches, format) in rules {
        if prefix.len() >= need {
            if matches(prefix) {
                return Detection::Format(format);
            }
        } else if !at_eof {
            // Too short to rule this format out yet.
            undecided = true;
        }
    }
    if undecided {
        Detection::NeedMore
    } else {
        Detection::Plain
    }
}

/// A streaming decoder over `input`; reads return decompressed bytes. Concatenated members or
/// frames are all decoded, as `gzip -dc`, `xz -dc`, `bzip2 -dc` and `zstd -dc` do.
pub fn decoder<'a, R: BufRead + Send + 'a>(
    format: Compression,
    input: R,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match format {
        Compression::Gz => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(
                u64::MAX,
                liblzma::stream::CONCATENATED,
            )
            .map_err(io::Error::other)?;
            Box::new(liblzma::bufread::XzDecoder::new_stream(input, stream))
        }
        Compression::Bz2 => Box::new(bzip2::bufread::MultiBzDecoder::new(input)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
    })
}

/// Fuzz entry point: detects and decodes `data` fed in small, data-chosen pieces (exercising
/// the prefix logic across chunk boundaries), with the output capped. Never panics.
pub fn fuzz_decode(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(split % 7) + 1;
    let mut seen = Vec::new();
    let mut detection = Detection::NeedMore;
    for chunk in rest.chunks(piece) {
        seen.extend_from_slice(chunk);
        detection = detect(&seen, false);
        if detection != Detection::NeedMore {
            break;
        }
    }
    if detection == Detection::NeedMore {
        detection = detect(&seen, true);
    }
    assert_ne!(
        detection,
        Detection::NeedMore,
        "detect at EOF always decides"
    );
    if let Detection::Format(format) = detection {
        let Ok(mut reader) = decoder(format, io::BufReader::with_capacity(piece, rest)) else {
            return;
        };
        let mut out = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        while total < 16 << 20 {
            match reader.read(&mut out) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_lava_spells_them() {
        assert_eq!(
            "gz".parse::<Decompress>(),
            Ok(Decompress::Format(Compression::Gz))
        );
        assert_eq!(
            "zstd".parse::<Decompress>(),
            Ok(Decompress::Format(Compression::Zstd))
        );
        assert_eq!("auto".parse::<Decompress>(), Ok(Decompress::Auto));
        assert_eq!("zip".parse::<Decompress>(), Err(CompressionNameError::Zip));
        assert!(matches!(
            "lz4".parse::<Decompress>(),
            Err(CompressionNameError::Unknown(_))
        ));
    }

    #[test]
    fn magic_bytes() {
        assert_eq!(
            detect(&[0x1f, 0x8b, 0x08, 0, 0, 0], false),
            Detection::Format(Compression::Gz)
        );
        assert_eq!(
            detect(b"\xfd7zXZ\x00", false),
            Detection::Format(Compression::Xz)
        );
        assert_eq!(
            detect(b"BZh91AY", false),
            Detection::Format(Compression::Bz2)
        );
        assert_eq!(
            detect(&[0x28, 0xb5, 0x2f, 0xfd], false),
            Detection::Format(Compression::Zstd)
        );
        assert_eq!(
            detect(&[0x5e, 0x2a, 0x4d, 0x18], false),
            Detection::Format(Compression::Zstd)
        );
        assert_eq!(detect(b"\x1f", false), Detection::NeedMore);
        assert_eq!(detect(b"\x1f", true), Detection::Plain);
        assert_eq!(detect(b"hello world", false), Detection::Plain);
        assert_eq!(detect(b"BZh0xxxxx", false), Detection::Plain);
        assert_eq!(detect(b"", true), Detection::Plain);
    }

    #[test]
    fn fuzz_entry_survives_seeds() {
        let mut gz = Vec::new();
        {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
            e.write_all(b"hello hello hello").unwrap();
            e.finish().unwrap();
        }
        for seed in [
            &b""[..],
            b"\x03",
            b"\x01\x1f\x8b\x08garbage",
            b"\x02\xfd7zXZ\x00\x00\x04",
            b"\x00BZh9\x31\x41\x59\x26\x53\x59",
            b"\x05\x28\xb5\x2f\xfd\x00\x00",
            b"\x04plain text",
        ] {
            fuzz_decode(seed);
        }
        let mut framed = vec![3u8];
        framed.extend_from_slice(&gz);
        fuzz_decode(&framed);
        framed.truncate(framed.len() - 5);
        fuzz_decode(&framed);
    }
}
