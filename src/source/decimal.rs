//! Decimal text as an unscaled integer: the one parser of `numeric`/`DECIMAL` values for
//! every engine (PostgreSQL's text values, MySQL's). Pure; compiled on its own by the fuzz
//! crate (`fuzz/src/lib.rs`), so it uses nothing else of the crate.
//!
//! Invariant: a value is exact or an error; digits are never dropped (extra decimal places
//! must be zeros) and nothing wider than 38 digits or the column's precision passes.

/// A numeric's text (`-123.450`) as an unscaled i128 at `scale`. Missing decimal places
/// are zeros; extra ones must be zeros.
pub fn parse_numeric(v: &str, scale: i8) -> Result<i128, String> {
    match v {
        "NaN" => return Err("NaN does not fit a decimal column".into()),
        "Infinity" | "-Infinity" => return Err("infinity does not fit a decimal column".into()),
        _ => {}
    }
    let invalid = || format!("invalid numeric {}", show(v));
    let (negative, digits) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(invalid());
    }
    let overflow = || "numeric value exceeds 38 digits".to_string();
    // Digits kept: those left of the point, plus `scale` after it (fewer if scale < 0).
    let keep = int.len() as i64 + scale as i64;
    let mut unscaled: i128 = 0;
    for (k, b) in int.bytes().chain(frac.bytes()).enumerate() {
        let digit = i128::from(b - b'0');
        if (k as i64) < keep {
            unscaled = unscaled
                .checked_mul(10)
                .and_then(|u| u.checked_add(digit))
                .ok_or_else(overflow)?;
        } else if digit != 0 {
            return Err(format!(
                "numeric {} has more decimal places than the column's scale {scale}",
                show(v)
            ));
        }
    }
    let missing = keep - (int.len() + frac.len()) as i64;
    if missing > 0 {
        unscaled = u32::try_from(missing)
            .ok()
            .and_then(|m| 10i128.checked_pow(m))
            .and_then(|p| unscaled.checked_mul(p))
            .ok_or_else(overflow)?;
    }
    Ok(if negative { -unscaled } else { unscaled })
}

/// `unscaled` if it has at most `precision` digits: a wider value does not fit the column's
/// decimal type (Parquet would store it cut).
pub fn within_precision(unscaled: i128, precision: u8) -> Result<i128, String> {
    let limit = 10u128.checked_pow(precision.into()).unwrap_or(u128::MAX);
    if unscaled.unsigned_abs() < limit {
        Ok(unscaled)
    } else {
        Err(format!(
            "numeric value has more than the column's {precision} digits"
        ))
    }
}

/// A value quoted for an error message, cut at 64 characters.
pub fn show(v: &str) -> String {
    const MAX: usize = 64;
    if v.chars().count() <= MAX {
        format!("'{v}'")
    } else {
        format!("'{}…'", v.chars().take(MAX).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_text_is_exact_or_an_error() {
        assert_eq!(parse_numeric(".5", 2), Ok(50));
        assert_eq!(parse_numeric("-1.25", 3), Ok(-1250));
        assert_eq!(parse_numeric("-0.5", 0).map_err(|_| ()), Err(()));
        assert_eq!(parse_numeric("12300", -2), Ok(123));
        assert!(parse_numeric("12340", -2).is_err());
        assert!(parse_numeric(&"9".repeat(40), 0).is_err());
        assert!(parse_numeric("NaN", 2).is_err());
        assert!(parse_numeric("1e5", 0).is_err());
        assert_eq!(within_precision(999, 3), Ok(999));
        assert!(within_precision(-1000, 3).is_err());
        assert_eq!(show(&"x".repeat(70)).chars().count(), 67);
    }
}
