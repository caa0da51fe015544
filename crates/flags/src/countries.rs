//! Country codes: the built-in lists and the expansion of the command line's `CC...`.

use std::collections::BTreeSet;

/// The 20 most populous countries: the default set, as in the book's `POP20_CC`.
pub(crate) const POP20: [&str; 20] = [
    "CN", "IN", "US", "ID", "BR", "PK", "NG", "BD", "RU", "JP", "MX", "PH", "VN", "ET", "EG", "DE",
    "IR", "TR", "CD", "FR",
];

/// The 194 country codes of the flag set (`--all`), AD to ZW, sorted.
pub(crate) const ALL: [&str; 194] = [
    "AD", "AE", "AF", "AG", "AL", "AM", "AO", "AR", "AT", "AU", "AZ", "BA", "BB", "BD", "BE", "BF",
    "BG", "BH", "BI", "BJ", "BN", "BO", "BR", "BS", "BT", "BW", "BY", "BZ", "CA", "CD", "CF", "CG",
    "CH", "CI", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CY", "CZ", "DE", "DJ", "DK", "DM", "DZ",
    "EC", "EE", "EG", "ER", "ES", "ET", "FI", "FJ", "FM", "FR", "GA", "GB", "GD", "GE", "GH", "GM",
    "GN", "GQ", "GR", "GT", "GW", "GY", "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IN", "IQ", "IR",
    "IS", "IT", "JM", "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KZ", "LA",
    "LB", "LC", "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MG", "MH",
    "MK", "ML", "MM", "MN", "MR", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NE", "NG", "NI",
    "NL", "NO", "NP", "NR", "NZ", "OM", "PA", "PE", "PG", "PH", "PK", "PL", "PT", "PW", "PY", "QA",
    "RO", "RS", "RU", "RW", "SA", "SB", "SC", "SD", "SE", "SG", "SI", "SK", "SL", "SM", "SN", "SO",
    "SR", "SS", "ST", "SV", "SY", "SZ", "TD", "TG", "TH", "TJ", "TL", "TM", "TN", "TO", "TR", "TT",
    "TV", "TW", "TZ", "UA", "UG", "US", "UY", "UZ", "VA", "VC", "VE", "VN", "VU", "WS", "YE", "ZA",
    "ZM", "ZW",
];

/// Why a `CC` argument was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid country code {0:?}: expected one or two letters (A to Z)")]
pub(crate) struct BadCode(pub(crate) String);

/// Every two-letter code, AA to ZZ (`--every`): 676 codes, sorted.
pub(crate) fn every() -> Vec<String> {
    letters()
        .flat_map(|a| letters().map(move |b| format!("{a}{b}")))
        .collect()
}

/// The 194 codes of the flag set (`--all`).
pub(crate) fn all() -> Vec<String> {
    ALL.iter().map(|&cc| cc.to_owned()).collect()
}

/// The default set: [`POP20`], sorted.
pub(crate) fn pop20() -> Vec<String> {
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
pub(crate) fn expand(args: &[String]) -> Result<Vec<String>, BadCode> {
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
    fn all_is_the_servers_set() {
        assert_eq!(ALL.as_slice(), slow_server::country_codes());
        assert!(ALL.is_sorted());
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
