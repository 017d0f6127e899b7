//! The one parser of quantities with a unit: byte sizes ([`Bytes`]) and durations
//! ([`Seconds`]), as the policy file and docker write them. Each is an integer, or a
//! string of digits and one unit letter; out of its range it is an error that says the
//! range. Pure.
#![forbid(unsafe_code)]

use serde::{de, Deserialize, Deserializer};
use std::fmt;

/// A kind of quantity: its units (largest first), its range, its words.
struct Unit {
    /// "size", "duration".
    what: &'static str,
    /// Unit letters and their multiples, largest first; the first is also what
    /// [`Unit::format`] tries first.
    table: &'static [(char, u64)],
    /// Whether `M` means `m`.
    fold_case: bool,
    min: u64,
    max: u64,
    /// For messages: `bytes`, `seconds`; the range; an example.
    base: &'static str,
    range: &'static str,
    example: &'static str,
    short_example: &'static str,
}

const SIZE: Unit = Unit {
    what: "size",
    table: &[
        ('t', 1 << 40),
        ('g', 1 << 30),
        ('m', 1 << 20),
        ('k', 1 << 10),
        ('b', 1),
    ],
    fold_case: true,
    min: 4 << 20,
    max: 1 << 40,
    base: "bytes",
    range: "4m to 1t",
    example: "\"512m\" or \"1g\"",
    short_example: "\"512m\"",
};

const DURATION: Unit = Unit {
    what: "duration",
    table: &[('d', 86400), ('h', 3600), ('m', 60), ('s', 1)],
    fold_case: false,
    min: 1,
    max: 30 * 86400,
    base: "seconds",
    range: "1s to 30d",
    example: "\"90s\", \"30m\" or \"2h\"",
    short_example: "\"30m\"",
};

impl Unit {
    fn parse(&self, s: &str) -> Result<u64, String> {
        let s = s.trim();
        let (num, mult) = match s.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => {
                let key = if self.fold_case {
                    c.to_ascii_lowercase()
                } else {
                    c
                };
                match self.table.iter().find(|(u, _)| *u == key) {
                    Some((_, m)) => (&s[..i], *m),
                    None => return Err(format!("invalid {} {s:?}: unknown unit {c:?}", self.what)),
                }
            }
            _ => (s, 1),
        };
        let n: u64 = num.parse().map_err(|_| {
            format!(
                "invalid {} {s:?}: expected e.g. {}",
                self.what, self.example
            )
        })?;
        self.checked(n.saturating_mul(mult))
    }

    fn checked(&self, n: u64) -> Result<u64, String> {
        if (self.min..=self.max).contains(&n) {
            Ok(n)
        } else {
            Err(format!(
                "{} {n} {} is out of range ({}): no value means unlimited",
                self.what, self.base, self.range
            ))
        }
    }

    /// `n` in the largest unit from `largest` down that divides it.
    fn format(&self, n: u64, largest: char, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = self.table.iter().skip_while(|(u, _)| *u != largest);
        for (u, k) in units {
            if n % k == 0 {
                return write!(f, "{}{u}", n / k);
            }
        }
        unreachable!("every table ends with the unit 1")
    }

    fn deserialize<'de, D: Deserializer<'de>>(&self, d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Int(n)) => self.checked(n),
            Ok(Raw::Str(s)) => self.parse(&s),
            Err(_) => Err(format!(
                "expected a {} such as {} or a number of {}",
                self.what, self.short_example, self.base
            )),
        }
        .map_err(de::Error::custom)
    }
}

/// A quantity type over a [`Unit`]: `parse`, `Display` in the largest unit from
/// `$largest` down that divides it, `Deserialize` from an integer or a string.
macro_rules! quantity {
    ($(#[$doc:meta])* $name:ident, $unit:ident, $largest:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        pub struct $name(pub u64);

        impl $name {
            pub const MIN: u64 = $unit.min;
            pub const MAX: u64 = $unit.max;

            pub fn parse(s: &str) -> Result<$name, String> {
                $unit.parse(s).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                $unit.format(self.0, $largest, f)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $unit.deserialize(d).map($name)
            }
        }
    };
}

quantity!(
    /// A byte size: an integer, or a string with a binary suffix as docker takes it
    /// (`"512m"`, `"1g"`, `"64k"`, `"100b"`). At least 4 MiB, at most 1 TiB.
    Bytes,
    SIZE,
    'g'
);

quantity!(
    /// A duration in whole seconds: an integer, or a string with a unit (`"90s"`,
    /// `"30m"`, `"2h"`, `"1d"`). At least 1 second, at most 30 days.
    Seconds,
    DURATION,
    'd'
);
