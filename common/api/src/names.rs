//! Names as the API, the config file and the cluster use them: each a type that can only hold a
//! valid name, so a check made once at the edge (a CLI argument, a config field, a path segment, a
//! peer's message) holds everywhere after it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// The name of a node, or of a standard WireGuard device beside it (nodes and devices share one
/// namespace on the overlay): 1–32 characters of lower-case `a`–`z`, digits, `-`, `_` and `.`. It
/// is what `init`/`join --name` take and what `/api/v1/nodes/{name}` carries.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct NodeName(String);

impl NodeName {
    /// Longest name accepted.
    pub const MAX_LEN: usize = 32;

    /// A name that only refers to a node (a path segment, a stored record): any case is that
    /// node's name, since case never tells nodes apart.
    pub fn from_any_case(name: &str) -> Result<NodeName, &'static str> {
        let name = name.to_ascii_lowercase();
        NodeName::check(&name)?;
        Ok(NodeName(name))
    }

    fn check(name: &str) -> Result<(), &'static str> {
        if name.is_empty() || name.len() > NodeName::MAX_LEN {
            return Err("a node name is 1-32 characters");
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err("a node name is lower case (names are compared without regard to case)");
        }
        let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b);
        if !name.bytes().all(allowed) {
            return Err("a node name has only a-z, 0-9, '-', '_' and '.'");
        }
        Ok(())
    }
}

/// What an operator typed: strict, so `Beta` is refused with the reason.
impl FromStr for NodeName {
    type Err = &'static str;

    fn from_str(name: &str) -> Result<NodeName, &'static str> {
        NodeName::check(name)?;
        Ok(NodeName(name.to_string()))
    }
}

/// What was stored or sent: a name written before names had to be lower case loads as its
/// lower-case form. That is the same node, since case never told nodes apart.
impl<'de> Deserialize<'de> for NodeName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<NodeName, D::Error> {
        let name = String::deserialize(deserializer)?;
        NodeName::from_any_case(&name).map_err(serde::de::Error::custom)
    }
}

/// The name of a controller (a `[[device]]` in the config file), its id in
/// `/api/v1/devices/{id}`: 1–64 characters of `a`–`z`, digits, `-` and `_`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceName(String);

/// The name of a bus (a `[[bus]]` in the config file); the same rule as a device's name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BusName(String);

/// Longest device or bus name accepted.
pub const MAX_SEGMENT_LEN: usize = 64;

/// A name that goes into API paths and metric labels as it is.
fn path_segment(name: String) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if name.is_empty() || name.len() > MAX_SEGMENT_LEN || !name.chars().all(allowed) {
        return Err(format!(
            "`{name}` must be 1–64 characters of a–z, 0–9, `-` and `_` (it appears in API paths)"
        ));
    }
    Ok(name)
}

macro_rules! path_segment_name {
    ($name:ident) => {
        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(name: String) -> Result<$name, String> {
                path_segment(name).map($name)
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(name: &str) -> Result<$name, String> {
                $name::try_from(name.to_string())
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }
    };
}

path_segment_name!(DeviceName);
path_segment_name!(BusName);

macro_rules! text_like {
    ($name:ident) => {
        impl $name {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        /// Read-only, so a valid name stays valid; lets a name go wherever text is read.
        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

text_like!(NodeName);
text_like!(DeviceName);
text_like!(BusName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_short_lower_case_words() {
        for good in ["beta", "farm-1", "house_2", "a.b", "x"] {
            assert_eq!(
                good.parse::<NodeName>().map(|n| n.to_string()),
                Ok(good.into())
            );
        }
        for bad in ["", "Beta", "farm 1", "ферма", "a/b", &"x".repeat(33)] {
            assert!(bad.parse::<NodeName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_stored_name_in_another_case_loads_as_the_same_node() {
        let loaded: NodeName = serde_json::from_str("\"Beta\"").expect("legacy name");
        assert_eq!(loaded, "beta");
        assert!(serde_json::from_str::<NodeName>("\"a/b\"").is_err());
        assert_eq!(
            serde_json::to_string(&loaded).ok().as_deref(),
            Some("\"beta\"")
        );
    }

    #[test]
    fn device_names_are_path_segments() {
        assert!("house-1".parse::<DeviceName>().is_ok());
        for bad in ["", "House", "a.b", "a/b", &"x".repeat(65)] {
            assert!(bad.parse::<DeviceName>().is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<DeviceName>("\"../x\"").is_err());
    }

    #[test]
    fn names_line_up_in_tables_like_text() {
        let name: DeviceName = "house-1".parse().expect("a device name");
        assert_eq!(format!("[{name:<9}]"), "[house-1  ]");
    }
}
