//! Input helpers shared by the HTTP/1 targets: split points from a seed, and runs of a byte so that
//! the limits on line and section lengths are reachable from short inputs.

/// A small xorshift generator: the split points are a function of the input, so a crash replays.
pub struct Splits(u64);

impl Splits {
    /// Split points drawn from `seed`.
    pub fn new(seed: u8) -> Self {
        Self(0x9e37_79b9_7f4a_7c15 ^ u64::from(seed).wrapping_mul(0x0100_0000_01b3))
    }

    /// The next piece length, 1 to `max` bytes.
    pub fn next(&mut self, max: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % max.max(1) as u64) as usize + 1
    }
}

/// Expands `0xFE count byte` into `byte` repeated `count * 17 + 1` times; other bytes stay.
pub fn expand(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i..] {
            [0xFE, count, byte, ..] => {
                out.resize(out.len() + usize::from(count) * 17 + 1, byte);
                i += 3;
            }
            _ => {
                out.push(input[i]);
                i += 1;
            }
        }
    }
    out
}
