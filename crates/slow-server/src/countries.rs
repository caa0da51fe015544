//! The built-in country list: the 194 codes of Fluent Python's flags examples and their
//! English names from the ISO 3166 crate.

/// The 194 country codes of the book's flag set, upper case and sorted.
const CODES: &[&str] = &[
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

/// The 194 built-in country codes, upper case, sorted from `AD` to `ZW`.
///
/// These are the countries of the book's flag set (Fluent Python, chapter 20); the built-in
/// server answers `/flags/{cc}/{cc}.gif` and `/flags/{cc}/metadata.json` for each of them,
/// with `cc` in lower case.
///
/// # Examples
///
/// ```
/// let codes = slow_server::country_codes();
/// assert_eq!(codes.len(), 194);
/// assert_eq!(codes.first(), Some(&"AD"));
/// assert_eq!(codes.last(), Some(&"ZW"));
/// ```
pub fn country_codes() -> &'static [&'static str] {
    CODES
}

/// The English short name of a built-in country, as written in its `metadata.json`.
///
/// `cc` is matched without regard to case. Names come from the `rust_iso3166` crate (the ISO
/// 3166-1 English short names, so `KR` is "Korea (Republic of)"). Returns `None` for a code
/// that is not one of the 194 built-in countries.
///
/// # Examples
///
/// ```
/// assert_eq!(slow_server::country_name("br"), Some("Brazil"));
/// assert_eq!(slow_server::country_name("XX"), None);
/// ```
pub fn country_name(cc: &str) -> Option<&'static str> {
    let upper = cc.to_ascii_uppercase();
    let code = CODES.binary_search(&upper.as_str()).ok()?;
    rust_iso3166::from_alpha2(CODES[code]).map(|country| country.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_sorted_unique_and_upper_case() {
        assert_eq!(CODES.len(), 194);
        assert!(CODES.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(
            CODES
                .iter()
                .all(|cc| cc.len() == 2 && cc.bytes().all(|b| b.is_ascii_uppercase()))
        );
    }

    #[test]
    fn every_code_has_a_name() {
        for cc in CODES {
            assert!(country_name(cc).is_some(), "{cc} has no ISO 3166 name");
        }
        assert_eq!(country_name("de"), Some("Germany"));
        assert_eq!(country_name("US"), Some("United States of America"));
        assert_eq!(country_name(""), None);
        assert_eq!(country_name("brazil"), None);
    }
}
