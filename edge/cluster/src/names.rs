//! Node names: what an operator passes to `init`/`join --name` and to `peers remove`, and what
//! `/api/v1/nodes/{name}` paths carry. One rule, checked by the node that names itself and again
//! by every node that admits a joiner, so `Beta` can never sit beside `beta`.

/// Longest name accepted.
pub const MAX_LEN: usize = 32;

/// Checks a node name: 1–32 characters of lower-case `a`–`z`, digits, `-`, `_` and `.`.
pub fn check(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_LEN {
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

/// Whether two names stand for the same node. Case never tells nodes apart, even in a state
/// written before names had to be lower case.
pub fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_lower_case_words() {
        for good in ["beta", "farm-1", "house_2", "a.b", "x"] {
            assert_eq!(check(good), Ok(()), "{good}");
        }
        for bad in ["", "Beta", "farm 1", "ферма", "a/b", &"x".repeat(33)] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        assert!(same("Beta", "beta") && !same("beta", "beta2"));
    }
}
