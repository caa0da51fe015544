//! Country codes: the built-in lists and the expansion of `CC...` arguments (one letter stands
//! for the 26 codes that start with it).

use std::collections::BTreeSet;

/// The 20 most populous countries: the default set, as in the book's `POP20_CC`.
pub const POP20: [&str; 20] = [
    "CN", "IN", "US", "ID", "BR", "PK", "NG", "BD", "RU", "JP", "MX", "PH", "VN", "ET", "EG", "DE",
    "IR", "TR", "CD", "FR",
];

/// Why a `CC` argument was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid country code {0:?}: expected one or two letters (A to Z)")]
pub struct BadCode(pub String);

/// Every two-letter code, AA to ZZ (`--every`): 676 codes, sorted.
pub fn every() -> Vec<String> {
    letters()
        .flat_map(|a| letters().map(move |b| format!("{a}{b}")))
        .collect()
}

/// The 194 codes of the flag set (`--all`), AD to ZW: the built-in server's list
/// ([`slow_server::country_codes`]), so the two cannot disagree.
pub fn all() -> Vec<String> {
    slow_server::country_codes()
        .iter()
        .map(|&cc| cc.to_owned())
        .collect()
}

/// The default set: [`POP20`], sorted.
pub fn pop20() -> Vec<String> {
    let mut codes: Vec<String> = POP20.iter().map(|&cc| cc.to_owned()).collect();
    codes.sort();
    codes
}

/// Expands `CC...` arguments: a two-letter code stands for itself and one letter for the 26 codes
/// starting with it. Case-insensitive; the result is upper case, sorted and without duplicates.
///
/// # Errors
///
/// [`BadCode`] for an argument that is not one or two ASCII letters.
pub fn expand(args: &[String]) -> Result<Vec<String>, BadCode> {
    let mut codes = BTreeSet::new();
    for arg in args {
        let upper = arg.to_ascii_uppercase();
        if upper.is_empty() || upper.len() > 2 || !upper.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(BadCode(arg.clone()));
        }
        if upper.len() == 1 {
            codes.extend(letters().map(|b| format!("{upper}{b}")));
        } else {
            codes.insert(upper);
        }
    }
    Ok(codes.into_iter().collect())
}

fn letters() -> impl Iterator<Item = char> + Clone {
    'A'..='Z'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(codes: &[&str]) -> Vec<String> {
        codes.iter().map(|&cc| cc.to_owned()).collect()
    }

    #[test]
    fn all_has_194_sorted_codes() {
        let all = all();
        assert_eq!(all.len(), 194);
        assert_eq!(all.first().map(String::as_str), Some("AD"));
        assert_eq!(all.last().map(String::as_str), Some("ZW"));
        assert!(all.is_sorted());
    }

    #[test]
    fn every_has_676_sorted_codes() {
        let every = every();
        assert_eq!(every.len(), 676);
        assert_eq!(every.first().map(String::as_str), Some("AA"));
        assert_eq!(every.last().map(String::as_str), Some("ZZ"));
        assert!(every.is_sorted());
    }

    #[test]
    fn pop20_is_sorted() {
        let pop = pop20();
        assert_eq!(pop.len(), 20);
        assert_eq!(pop.first().map(String::as_str), Some("BD"));
        assert_eq!(pop.last().map(String::as_str), Some("VN"));
    }

    #[test]
    fn expand_letters_codes_and_case() {
        assert_eq!(
            expand(&strings(&["br", "AD", "aa", "BR"])),
            Ok(strings(&["AA", "AD", "BR"]))
        );
        let b = expand(&strings(&["b"])).unwrap_or_default();
        assert_eq!(b.len(), 26);
        assert_eq!(b[0], "BA");
        assert_eq!(expand(&strings(&["z", "zz"])).map(|v| v.len()), Ok(26));
    }

    #[test]
    fn expand_rejects_bad_codes() {
        for bad in ["", "ABC", "1A", "é", "A-", "ÀB"] {
            assert_eq!(
                expand(&strings(&[bad])),
                Err(BadCode(bad.to_owned())),
                "{bad:?}"
            );
        }
    }
}
