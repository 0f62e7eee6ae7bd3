//! Exact conversion between PostgreSQL's `numeric` binary send format and its
//! canonical text form.
//!
//! Both directions reproduce the server byte for byte: text produced here is
//! what `numeric_out` prints after `numeric_recv` accepted the same bytes, and
//! bytes produced here are what `numeric_send` emits for the value `numeric_in`
//! parses. Replicated values can therefore move between the binary and text
//! representations without any drift in scale or digits.

/// Sign word of a positive (or zero) finite value.
const SIGN_POS: u16 = 0x0000;
/// Sign word of a negative finite value.
const SIGN_NEG: u16 = 0x4000;
/// Sign word of NaN.
const SIGN_NAN: u16 = 0xC000;
/// Sign word of +Infinity.
const SIGN_PINF: u16 = 0xD000;
/// Sign word of -Infinity.
const SIGN_NINF: u16 = 0xF000;
/// Largest display scale the on-disk header can hold; the server rejects more.
const DSCALE_MAX: u16 = 0x3FFF;
/// Decimal digits per base-10000 digit.
const DEC_DIGITS: i64 = 4;
/// Scale factors for a decimal digit by its position inside a base-10000 digit.
const POW10: [u16; 4] = [1, 10, 100, 1000];

/// Display scale the server sends for both infinities: it reads the scale of
/// special values through the short-header mask, which overlaps bit 12 of
/// their sign word (0xD000 and 0xF000, but not NaN's 0xC000).
const INFINITY_DSCALE: u16 = 32;

/// Length of the fixed header that precedes the base-10000 digits.
const HEADER_LEN: usize = 8;

/// Zero-padded four-character text of every base-10000 digit, so output
/// copies whole groups instead of formatting one decimal digit at a time.
static GROUP_TEXT_BYTES: [u8; 40_000] = {
    let mut table = [0u8; 40_000];
    let mut value = 0;
    while value < 10_000 {
        table[value * 4] = b'0' + (value / 1000) as u8;
        table[value * 4 + 1] = b'0' + (value / 100 % 10) as u8;
        table[value * 4 + 2] = b'0' + (value / 10 % 10) as u8;
        table[value * 4 + 3] = b'0' + (value % 10) as u8;
        value += 1;
    }
    table
};

/// `GROUP_TEXT_BYTES` as text; it is pure ASCII digits, checked at compile time.
static GROUP_TEXT: &str = match std::str::from_utf8(&GROUP_TEXT_BYTES) {
    Ok(text) => text,
    Err(_) => panic!("digit table is not ASCII"),
};

/// Why a `numeric` value could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumericError {
    /// The binary value ended before its header or its declared digits.
    #[error("numeric binary value is {len} bytes but needs {needed}")]
    Truncated {
        /// Bytes supplied.
        len: usize,
        /// Bytes the header declares (or the header length itself).
        needed: usize,
    },
    /// The binary value carries bytes after its declared digits.
    #[error("numeric binary value has {extra} bytes after its declared digits")]
    TrailingBytes {
        /// Number of unexpected bytes.
        extra: usize,
    },
    /// The sign word is none of the five the server defines.
    #[error("invalid sign 0x{0:04X} in external numeric value")]
    InvalidSign(u16),
    /// The display scale exceeds what the server can store.
    #[error("invalid scale {0} in external numeric value")]
    InvalidScale(u16),
    /// A base-10000 digit lies outside 0..=9999.
    #[error("invalid digit {digit} at position {index} in external numeric value")]
    InvalidDigit {
        /// Zero-based position of the digit after the header.
        index: usize,
        /// The offending digit.
        digit: i16,
    },
    /// The text is not a number the server's input function accepts.
    #[error("invalid input syntax for type numeric: \"{0}\"")]
    InvalidSyntax(String),
    /// The value's weight or scale does not fit the server's format.
    #[error("value overflows numeric format")]
    Overflow,
}

/// Converts a binary `numeric` value to the exact text the server prints for it.
pub fn numeric_to_text(bytes: &[u8]) -> Result<String, NumericError> {
    let mut out = String::new();
    numeric_to_text_into(bytes, &mut out)?;
    Ok(out)
}

/// Appends the text form of a binary `numeric` value; appends nothing on error.
pub fn numeric_to_text_into(bytes: &[u8], out: &mut String) -> Result<(), NumericError> {
    let Some(header) = bytes.first_chunk::<HEADER_LEN>() else {
        return Err(NumericError::Truncated {
            len: bytes.len(),
            needed: HEADER_LEN,
        });
    };
    let ndigits = usize::from(u16::from_be_bytes([header[0], header[1]]));
    let weight = i64::from(i16::from_be_bytes([header[2], header[3]]));
    let sign = u16::from_be_bytes([header[4], header[5]]);
    let dscale = u16::from_be_bytes([header[6], header[7]]);

    // The digit count is read unsigned, as the server does, because values with
    // more than 32767 digits wrap the sender's 16-bit field.
    let needed = HEADER_LEN + 2 * ndigits;
    if bytes.len() < needed {
        return Err(NumericError::Truncated {
            len: bytes.len(),
            needed,
        });
    }
    if bytes.len() > needed {
        return Err(NumericError::TrailingBytes {
            extra: bytes.len() - needed,
        });
    }
    if !matches!(sign, SIGN_POS | SIGN_NEG | SIGN_NAN | SIGN_PINF | SIGN_NINF) {
        return Err(NumericError::InvalidSign(sign));
    }
    if dscale > DSCALE_MAX {
        return Err(NumericError::InvalidScale(dscale));
    }
    let raw = &bytes[HEADER_LEN..];
    for (index, pair) in raw.chunks_exact(2).enumerate() {
        let digit = i16::from_be_bytes([pair[0], pair[1]]);
        if !(0..10_000).contains(&digit) {
            return Err(NumericError::InvalidDigit { index, digit });
        }
    }
    // Special values ignore weight, scale and digits, exactly like the server.
    match sign {
        SIGN_NAN => {
            out.push_str("NaN");
            return Ok(());
        }
        SIGN_PINF => {
            out.push_str("Infinity");
            return Ok(());
        }
        SIGN_NINF => {
            out.push_str("-Infinity");
            return Ok(());
        }
        _ => {}
    }

    // Senders other than the server may pad with zero digits; they change
    // neither the value nor its printed form, so drop them up front.
    let digit_at =
        |index: usize| usize::from(u16::from_be_bytes([raw[2 * index], raw[2 * index + 1]]));
    let mut first = 0;
    while first < ndigits && digit_at(first) == 0 {
        first += 1;
    }
    let mut last = ndigits;
    while last > first && digit_at(last - 1) == 0 {
        last -= 1;
    }
    let count = last - first;
    let digit = |index: usize| digit_at(first + index);
    let weight = weight - first as i64;
    let scale = i64::from(dscale);

    if count == 0 {
        out.reserve(2 + usize::from(dscale));
        out.push('0');
        push_fraction(out, scale, |_| 0);
        return Ok(());
    }

    // The server truncates digits hidden by the scale before printing, so a
    // negative value whose visible digits are all zero loses its minus sign.
    let lowest_position = DEC_DIGITS * weight;
    let visible = if lowest_position >= -scale {
        true
    } else if lowest_position + DEC_DIGITS > -scale {
        let kept = lowest_position + DEC_DIGITS + scale;
        digit(0) / usize::from(POW10[(DEC_DIGITS - kept) as usize]) != 0
    } else {
        false
    };
    let negative = sign == SIGN_NEG && visible;

    let integer_len = if weight < 0 {
        1
    } else {
        (DEC_DIGITS * (weight + 1)) as usize
    };
    out.reserve(usize::from(negative) + integer_len + 1 + usize::from(dscale));
    if negative {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        let leading = digit(0);
        let width = match leading {
            1000.. => 4,
            100.. => 3,
            10.. => 2,
            _ => 1,
        };
        out.push_str(&GROUP_TEXT[leading * 4 + 4 - width..leading * 4 + 4]);
        for index in 1..=weight as usize {
            let value = if index < count { digit(index) } else { 0 };
            out.push_str(&GROUP_TEXT[value * 4..value * 4 + 4]);
        }
    }
    push_fraction(out, scale, |group| {
        // `group` counts base-10000 digits after the point starting at zero,
        // which sits at index `weight + 1 + group` of the stripped digits.
        let index = weight + 1 + group;
        if index >= 0 && (index as usize) < count {
            digit(index as usize)
        } else {
            0
        }
    });
    Ok(())
}

/// Writes the point and exactly `scale` fraction digits, taken four at a time.
fn push_fraction(out: &mut String, scale: i64, group_value: impl Fn(i64) -> usize) {
    if scale <= 0 {
        return;
    }
    out.push('.');
    let mut remaining = scale;
    let mut group = 0;
    while remaining > 0 {
        let take = remaining.min(DEC_DIGITS) as usize;
        let value = group_value(group);
        out.push_str(&GROUP_TEXT[value * 4..value * 4 + take]);
        remaining -= DEC_DIGITS;
        group += 1;
    }
}

/// Converts text to the exact binary `numeric` value the server would send for it.
pub fn text_to_numeric(text: &str) -> Result<Vec<u8>, NumericError> {
    let mut out = Vec::new();
    text_to_numeric_into(text, &mut out)?;
    Ok(out)
}

/// Appends the binary form of a textual `numeric`; appends nothing on error.
///
/// Accepts what PostgreSQL 16 and later accept: surrounding whitespace, a
/// sign, decimal digits with an optional point and exponent, underscores
/// between digits, `0x`/`0o`/`0b` integers, and case-insensitive `NaN`,
/// `Infinity` and `inf`.
pub fn text_to_numeric_into(text: &str, out: &mut Vec<u8>) -> Result<(), NumericError> {
    let s = text.as_bytes();
    let mut pos = skip_space(s, 0);
    let number_start = pos;
    let mut negative = false;
    match s.get(pos) {
        Some(b'+') => pos += 1,
        Some(b'-') => {
            negative = true;
            pos += 1;
        }
        _ => {}
    }

    if !matches!(s.get(pos), Some(b'0'..=b'9' | b'.')) {
        // NaN is matched before the sign is skipped, so a signed NaN is rejected.
        let (sign, end) = if starts_with_ignore_case(&s[number_start..], b"nan") {
            (SIGN_NAN, number_start + 3)
        } else if starts_with_ignore_case(&s[pos..], b"infinity") {
            (if negative { SIGN_NINF } else { SIGN_PINF }, pos + 8)
        } else if starts_with_ignore_case(&s[pos..], b"inf") {
            (if negative { SIGN_NINF } else { SIGN_PINF }, pos + 3)
        } else {
            return Err(syntax_error(text));
        };
        if skip_space(s, end) != s.len() {
            return Err(syntax_error(text));
        }
        let dscale = if sign == SIGN_NAN { 0 } else { INFINITY_DSCALE };
        write_header(out, 0, 0, sign, dscale);
        return Ok(());
    }

    if s[pos] == b'0' {
        let radix = match s.get(pos + 1) {
            Some(b'x' | b'X') => Some(Radix::Hex),
            Some(b'o' | b'O') => Some(Radix::Octal),
            Some(b'b' | b'B') => Some(Radix::Binary),
            _ => None,
        };
        if let Some(radix) = radix {
            return parse_non_decimal(text, pos + 2, radix, negative, out);
        }
    }
    parse_decimal(text, pos, negative, out)
}

/// What the validating pass learns about a decimal mantissa and exponent.
struct DecimalScan {
    /// Byte range holding the mantissa's digits, points and underscores.
    mantissa: std::ops::Range<usize>,
    /// Digits written before the point.
    integer_digits: i64,
    /// Digits written after the point.
    fraction_digits: i64,
    /// Index, among all mantissa digits, of the first and last nonzero digit.
    nonzero: Option<(usize, usize)>,
    /// Power of ten applied by the exponent.
    exponent: i64,
}

/// Parses decimal notation in two passes so digits are packed straight into
/// `out` without an intermediate buffer.
fn parse_decimal(
    text: &str,
    start: usize,
    negative: bool,
    out: &mut Vec<u8>,
) -> Result<(), NumericError> {
    let scan = scan_decimal(text, start)?;
    let fraction_scale = scan.fraction_digits - scan.exponent;
    let dscale = fraction_scale.max(0);
    if dscale > i64::from(DSCALE_MAX) {
        return Err(NumericError::Overflow);
    }
    let dscale = dscale as u16;

    let Some((first, last)) = scan.nonzero else {
        // Zero is always stored positive with weight 0 and no digits.
        write_header(out, 0, 0, SIGN_POS, dscale);
        return Ok(());
    };

    // Decimal position (power of ten) of the mantissa digit with index k is
    // `top - k`.
    let top = scan.integer_digits - 1 + scan.exponent;
    let first_position = top - first as i64;
    let last_position = top - last as i64;
    let weight = first_position.div_euclid(DEC_DIGITS);
    let last_weight = last_position.div_euclid(DEC_DIGITS);
    let weight = i16::try_from(weight).map_err(|_| NumericError::Overflow)?;
    let ndigits = i64::from(weight) - last_weight + 1;
    // At most 32768 integer digits plus 4096 fraction digits, so it fits.
    let ndigits = ndigits as u16;

    out.reserve(HEADER_LEN + 2 * usize::from(ndigits));
    let sign = if negative { SIGN_NEG } else { SIGN_POS };
    write_header(out, ndigits, weight, sign, dscale);

    let mut index = 0usize;
    let mut group: u16 = 0;
    for &byte in &text.as_bytes()[scan.mantissa] {
        if !byte.is_ascii_digit() {
            continue;
        }
        if index >= first {
            let position = top - index as i64;
            let within = position.rem_euclid(DEC_DIGITS) as usize;
            if within == 3 && index > first {
                out.extend_from_slice(&group.to_be_bytes());
                group = 0;
            }
            group += u16::from(byte - b'0') * POW10[within];
            if index == last {
                out.extend_from_slice(&group.to_be_bytes());
                break;
            }
        }
        index += 1;
    }
    Ok(())
}

/// Validates decimal notation from `start` to the end of `text`, mirroring the
/// server's rules for points, underscores, exponents and trailing whitespace.
fn scan_decimal(text: &str, start: usize) -> Result<DecimalScan, NumericError> {
    let s = text.as_bytes();
    let is_digit = |pos: usize| s.get(pos).is_some_and(u8::is_ascii_digit);
    let mut pos = start;
    let mut have_point = false;
    if s.get(pos) == Some(&b'.') {
        have_point = true;
        pos += 1;
    }
    if !is_digit(pos) {
        return Err(syntax_error(text));
    }

    let mut integer_digits = 0i64;
    let mut fraction_digits = 0i64;
    let mut index = 0usize;
    let mut nonzero: Option<(usize, usize)> = None;
    while let Some(&byte) = s.get(pos) {
        match byte {
            b'0'..=b'9' => {
                if byte != b'0' {
                    nonzero = Some(match nonzero {
                        Some((first, _)) => (first, index),
                        None => (index, index),
                    });
                }
                if have_point {
                    fraction_digits += 1;
                } else {
                    integer_digits += 1;
                }
                index += 1;
                pos += 1;
            }
            b'.' => {
                if have_point || s.get(pos + 1) == Some(&b'_') {
                    return Err(syntax_error(text));
                }
                have_point = true;
                pos += 1;
            }
            b'_' => {
                pos += 1;
                if !is_digit(pos) {
                    return Err(syntax_error(text));
                }
            }
            _ => break,
        }
    }
    let mantissa = start..pos;

    let mut exponent = 0i64;
    if matches!(s.get(pos), Some(b'e' | b'E')) {
        pos += 1;
        let mut exponent_negative = false;
        match s.get(pos) {
            Some(b'+') => pos += 1,
            Some(b'-') => {
                exponent_negative = true;
                pos += 1;
            }
            _ => {}
        }
        if !is_digit(pos) {
            return Err(syntax_error(text));
        }
        while let Some(&byte) = s.get(pos) {
            match byte {
                b'0'..=b'9' => {
                    exponent = exponent * 10 + i64::from(byte - b'0');
                    // Same bound as the server, which keeps later arithmetic
                    // far from overflow.
                    if exponent > i64::from(i32::MAX / 2) {
                        return Err(NumericError::Overflow);
                    }
                    pos += 1;
                }
                b'_' => {
                    pos += 1;
                    if !is_digit(pos) {
                        return Err(syntax_error(text));
                    }
                }
                _ => break,
            }
        }
        if exponent_negative {
            exponent = -exponent;
        }
    }

    if skip_space(s, pos) != s.len() {
        return Err(syntax_error(text));
    }
    Ok(DecimalScan {
        mantissa,
        integer_digits,
        fraction_digits,
        nonzero,
        exponent,
    })
}

/// Base of a prefixed integer literal.
#[derive(Clone, Copy)]
enum Radix {
    Hex,
    Octal,
    Binary,
}

impl Radix {
    /// Numeric base.
    fn base(self) -> u64 {
        match self {
            Radix::Hex => 16,
            Radix::Octal => 8,
            Radix::Binary => 2,
        }
    }

    /// Digits folded per step: as many as keep `base^n` within 2^48, so a
    /// base-10000 digit times the multiplier cannot overflow 64 bits.
    fn digits_per_chunk(self) -> u32 {
        match self {
            Radix::Hex => 12,
            Radix::Octal => 16,
            Radix::Binary => 48,
        }
    }

    /// Value of one digit character, if it is a digit of this base.
    fn digit(self, byte: u8) -> Option<u64> {
        let value = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            b'A'..=b'F' => byte - b'A' + 10,
            _ => return None,
        };
        (u64::from(value) < self.base()).then_some(u64::from(value))
    }
}

/// Largest weight the server can store; one base-10000 digit more overflows.
const MAX_WEIGHT_DIGITS: usize = i16::MAX as usize + 1;

/// Parses a `0x`/`0o`/`0b` integer starting after its prefix.
fn parse_non_decimal(
    text: &str,
    start: usize,
    radix: Radix,
    negative: bool,
    out: &mut Vec<u8>,
) -> Result<(), NumericError> {
    let s = text.as_bytes();
    let is_digit = |pos: usize| s.get(pos).and_then(|&b| radix.digit(b)).is_some();
    // Little-endian base-10000 digits of the value accumulated so far.
    let mut limbs: Vec<u16> = Vec::new();
    let mut chunk = 0u64;
    let mut multiplier = 1u64;
    let mut chunk_len = 0;
    let mut pos = start;
    while let Some(&byte) = s.get(pos) {
        if let Some(value) = radix.digit(byte) {
            if chunk_len == radix.digits_per_chunk() {
                fold_chunk(&mut limbs, multiplier, chunk)?;
                chunk = 0;
                multiplier = 1;
                chunk_len = 0;
            }
            chunk = chunk * radix.base() + value;
            multiplier *= radix.base();
            chunk_len += 1;
            pos += 1;
        } else if byte == b'_' {
            pos += 1;
            if !is_digit(pos) {
                return Err(syntax_error(text));
            }
        } else {
            break;
        }
    }
    if pos == start {
        return Err(syntax_error(text));
    }
    fold_chunk(&mut limbs, multiplier, chunk)?;
    if skip_space(s, pos) != s.len() {
        return Err(syntax_error(text));
    }

    let Some(trailing_zeros) = limbs.iter().position(|&limb| limb != 0) else {
        write_header(out, 0, 0, SIGN_POS, 0);
        return Ok(());
    };
    let significant = &limbs[trailing_zeros..];
    let weight = (limbs.len() - 1) as i16;
    let sign = if negative { SIGN_NEG } else { SIGN_POS };
    out.reserve(HEADER_LEN + 2 * significant.len());
    write_header(out, significant.len() as u16, weight, sign, 0);
    for limb in significant.iter().rev() {
        out.extend_from_slice(&limb.to_be_bytes());
    }
    Ok(())
}

/// Sets `limbs = limbs * multiplier + chunk`, failing once the value needs a
/// weight the server cannot store.
fn fold_chunk(limbs: &mut Vec<u16>, multiplier: u64, chunk: u64) -> Result<(), NumericError> {
    let mut carry = chunk;
    for limb in limbs.iter_mut() {
        let value = u64::from(*limb) * multiplier + carry;
        *limb = (value % 10_000) as u16;
        carry = value / 10_000;
    }
    while carry > 0 {
        limbs.push((carry % 10_000) as u16);
        carry /= 10_000;
    }
    if limbs.len() > MAX_WEIGHT_DIGITS {
        return Err(NumericError::Overflow);
    }
    Ok(())
}

/// Appends the fixed eight-byte header.
fn write_header(out: &mut Vec<u8>, ndigits: u16, weight: i16, sign: u16, dscale: u16) {
    out.extend_from_slice(&ndigits.to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
}

/// Skips the characters C's `isspace` accepts, which include vertical tab.
fn skip_space(s: &[u8], mut pos: usize) -> usize {
    while matches!(s.get(pos), Some(b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C)) {
        pos += 1;
    }
    pos
}

/// ASCII case-insensitive prefix test; `pattern` must be lowercase.
fn starts_with_ignore_case(s: &[u8], pattern: &[u8]) -> bool {
    s.len() >= pattern.len() && s[..pattern.len()].eq_ignore_ascii_case(pattern)
}

/// Builds the syntax error, quoting the input the way the server does.
fn syntax_error(text: &str) -> NumericError {
    NumericError::InvalidSyntax(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a binary value from its header fields and digits.
    fn encode(weight: i16, sign: u16, dscale: u16, digits: &[i16]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(digits.len() as u16).to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        for digit in digits {
            out.extend_from_slice(&digit.to_be_bytes());
        }
        out
    }

    fn to_text(bytes: &[u8]) -> String {
        numeric_to_text(bytes).unwrap_or_else(|e| panic!("decoding {bytes:?}: {e}"))
    }

    fn to_binary(text: &str) -> Vec<u8> {
        text_to_numeric(text).unwrap_or_else(|e| panic!("encoding {text:?}: {e}"))
    }

    /// Asserts both directions for a canonical text and its exact bytes.
    fn assert_pair(text: &str, weight: i16, sign: u16, dscale: u16, digits: &[i16]) {
        let bytes = encode(weight, sign, dscale, digits);
        assert_eq!(to_binary(text), bytes, "binary of {text:?}");
        assert_eq!(to_text(&bytes), text, "text of {bytes:?}");
    }

    #[test]
    fn exact_bytes_for_known_values() {
        assert_eq!(to_binary("1"), vec![0, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_pair("1", 0, SIGN_POS, 0, &[1]);
        assert_pair("12345.678", 1, SIGN_POS, 3, &[1, 2345, 6780]);
        assert_pair("-0.001", -1, SIGN_NEG, 3, &[10]);
        assert_pair("0", 0, SIGN_POS, 0, &[]);
        assert_pair("0.00", 0, SIGN_POS, 2, &[]);
        assert_pair("-0.5", -1, SIGN_NEG, 1, &[5000]);
        assert_pair("1000", 0, SIGN_POS, 0, &[1000]);
        assert_pair("10000", 1, SIGN_POS, 0, &[1]);
        assert_pair("0.0001", -1, SIGN_POS, 4, &[1]);
        assert_pair("0.00001", -2, SIGN_POS, 5, &[1000]);
        assert_pair("100000000000000000000", 5, SIGN_POS, 0, &[1]);
        assert_pair(
            "123456789.123456789",
            2,
            SIGN_POS,
            9,
            &[1, 2345, 6789, 1234, 5678, 9000],
        );
        assert_pair(
            "99999999999999999999999999999.99999",
            7,
            SIGN_POS,
            5,
            &[9, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9000],
        );
        assert_pair("-12.5000", 0, SIGN_NEG, 4, &[12, 5000]);
        assert_pair("10000.0001", 1, SIGN_POS, 4, &[1, 0, 1]);
        assert_pair("NaN", 0, SIGN_NAN, 0, &[]);
        assert_pair("Infinity", 0, SIGN_PINF, 32, &[]);
        assert_pair("-Infinity", 0, SIGN_NINF, 32, &[]);
        // Bytes as a PostgreSQL 15 server's numeric_send returned them.
        assert_eq!(to_binary("inf"), [0, 0, 0, 0, 0xD0, 0, 0, 0x20]);
        assert_eq!(to_binary("-inf"), [0, 0, 0, 0, 0xF0, 0, 0, 0x20]);
        assert_eq!(to_binary("nan"), [0, 0, 0, 0, 0xC0, 0, 0, 0]);
        assert_eq!(to_text(&encode(0, SIGN_PINF, 0, &[])), "Infinity");
    }

    #[test]
    fn text_input_forms() {
        let cases = [
            ("1e20", "100000000000000000000"),
            ("1.5e-3", "0.0015"),
            ("1.5E+3", "1500"),
            ("1.505e2", "150.5"),
            ("1.50e2", "150"),
            ("15e-1", "1.5"),
            ("0e-5", "0.00000"),
            ("0.00e3", "0"),
            ("-0", "0"),
            ("-0.000", "0.000"),
            ("+7", "7"),
            ("007.50", "7.50"),
            (".5", "0.5"),
            ("-.5", "-0.5"),
            ("5.", "5"),
            ("  -12.5\t\n", "-12.5"),
            ("\x0b\x0c 3 \r", "3"),
            ("1_000_000", "1000000"),
            ("1_0.0_1", "10.01"),
            ("0_1", "1"),
            ("1e1_0", "10000000000"),
            ("nan", "NaN"),
            (" NAN ", "NaN"),
            ("inf", "Infinity"),
            ("+inf", "Infinity"),
            ("-INF", "-Infinity"),
            ("infinity", "Infinity"),
            ("+Infinity", "Infinity"),
            ("-iNfInItY  ", "-Infinity"),
            ("0x1F", "31"),
            ("-0xff", "-255"),
            ("0X_1", "1"),
            ("0o17", "15"),
            ("0O7_7", "63"),
            ("0b101", "5"),
            ("-0B1_0", "-2"),
            ("0x0", "0"),
            ("-0x0_0", "0"),
            (
                "0xFFFFFFFFFFFFFFFFFFFFFFFF",
                "79228162514264337593543950335",
            ),
            ("0x1000000000000", "281474976710656"),
            (" 0b1 ", "1"),
        ];
        for (input, expected) in cases {
            assert_eq!(to_text(&to_binary(input)), expected, "input {input:?}");
            assert_eq!(to_binary(input), to_binary(expected), "input {input:?}");
        }
    }

    #[test]
    fn rejects_bad_text() {
        let cases = [
            "",
            " ",
            "abc",
            "1.2.3",
            "1e",
            "1e+",
            "1e-",
            "1ee2",
            "--1",
            "+-1",
            "1 2",
            "-NaN",
            "+NaN",
            "NaNx",
            "infinit",
            "infinityy",
            "Infinity x",
            ".",
            "-.",
            "+",
            "1_",
            "_1",
            "1__2",
            "1._5",
            "1_.5",
            "1e_5",
            "1e5_",
            "0x",
            "0x_",
            "0xg",
            "0x1.5",
            "0x1_",
            "0b2",
            "0o8",
            "1,5",
            "1\u{0}",
            "١",
        ];
        for input in cases {
            assert_eq!(
                text_to_numeric(input),
                Err(NumericError::InvalidSyntax(input.to_owned())),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn rejects_values_beyond_the_format() {
        assert_eq!(text_to_numeric("1e131072"), Err(NumericError::Overflow));
        assert_eq!(text_to_numeric("-9.9e131072"), Err(NumericError::Overflow));
        assert!(text_to_numeric("-9.9e131071").is_ok());
        assert_eq!(text_to_numeric("1e-16384"), Err(NumericError::Overflow));
        assert_eq!(text_to_numeric("0e-16384"), Err(NumericError::Overflow));
        assert_eq!(text_to_numeric("1e1073741824"), Err(NumericError::Overflow));
        assert_eq!(
            text_to_numeric("1e-1073741824"),
            Err(NumericError::Overflow)
        );
        let huge_hex = format!("0x1{}", "0".repeat(108_853));
        assert_eq!(text_to_numeric(&huge_hex), Err(NumericError::Overflow));

        let largest = to_binary("1e131071");
        assert_eq!(largest, encode(32767, SIGN_POS, 0, &[1000]));
        let text = to_text(&largest);
        assert_eq!(text.len(), 131_072);
        assert_eq!(to_binary(&text), largest);

        let smallest = to_binary("1e-16383");
        assert_eq!(smallest, encode(-4096, SIGN_POS, 16383, &[10]));
        assert_eq!(to_binary(&to_text(&smallest)), smallest);
        assert_eq!(to_binary("0e131072"), encode(0, SIGN_POS, 0, &[]));
    }

    #[test]
    fn decode_errors() {
        assert_eq!(
            numeric_to_text(&[0, 1, 0, 0]),
            Err(NumericError::Truncated { len: 4, needed: 8 })
        );
        let mut short = encode(0, SIGN_POS, 0, &[1, 2]);
        short.pop();
        assert_eq!(
            numeric_to_text(&short),
            Err(NumericError::Truncated {
                len: 11,
                needed: 12
            })
        );
        let mut long = encode(0, SIGN_POS, 0, &[1]);
        long.push(0);
        assert_eq!(
            numeric_to_text(&long),
            Err(NumericError::TrailingBytes { extra: 1 })
        );
        assert_eq!(
            numeric_to_text(&encode(0, 0x8000, 0, &[1])),
            Err(NumericError::InvalidSign(0x8000))
        );
        assert_eq!(
            numeric_to_text(&encode(0, SIGN_POS, 0x4000, &[1])),
            Err(NumericError::InvalidScale(0x4000))
        );
        assert_eq!(
            numeric_to_text(&encode(0, SIGN_POS, 0, &[1, 10_000])),
            Err(NumericError::InvalidDigit {
                index: 1,
                digit: 10_000
            })
        );
        assert_eq!(
            numeric_to_text(&encode(0, SIGN_NAN, 0, &[-1])),
            Err(NumericError::InvalidDigit {
                index: 0,
                digit: -1
            })
        );
        let mut out = String::from("kept");
        assert!(numeric_to_text_into(&[0], &mut out).is_err());
        assert_eq!(out, "kept");
        let mut bytes = vec![9];
        assert!(text_to_numeric_into("x", &mut bytes).is_err());
        assert_eq!(bytes, [9]);
    }

    #[test]
    fn decodes_unnormalized_and_over_precise_values() {
        // Zero-padded digits, as a third-party sender might produce.
        assert_eq!(to_text(&encode(2, SIGN_POS, 0, &[0, 0, 5, 0])), "5");
        assert_eq!(to_text(&encode(5, SIGN_POS, 2, &[])), "0.00");
        assert_eq!(to_text(&encode(0, SIGN_NEG, 0, &[])), "0");
        assert_eq!(to_text(&encode(-3, SIGN_NEG, 1, &[0, 0])), "0.0");
        assert_eq!(to_text(&encode(0, SIGN_POS, 0, &[0, 7])), "0");
        assert_eq!(to_text(&encode(0, SIGN_POS, 4, &[0, 7])), "0.0007");
        // Digits hidden by the scale are truncated, never rounded.
        assert_eq!(to_text(&encode(0, SIGN_POS, 0, &[1, 9999])), "1");
        assert_eq!(to_text(&encode(-1, SIGN_NEG, 0, &[5000])), "0");
        assert_eq!(to_text(&encode(-1, SIGN_NEG, 2, &[1])), "0.00");
        assert_eq!(to_text(&encode(-1, SIGN_NEG, 4, &[1])), "-0.0001");
        assert_eq!(to_text(&encode(-1, SIGN_NEG, 2, &[1234])), "-0.12");
        assert_eq!(to_text(&encode(-1, SIGN_NEG, 2, &[34])), "0.00");
        assert_eq!(to_text(&encode(-1, SIGN_NEG, 3, &[34])), "-0.003");
        assert_eq!(to_text(&encode(-2, SIGN_NEG, 4, &[9999])), "0.0000");
        assert_eq!(to_text(&encode(-2, SIGN_NEG, 5, &[9999])), "-0.00009");
        assert_eq!(to_text(&encode(1, SIGN_NEG, 0, &[3, 1])), "-30001");
        // Extremes of the header fields.
        assert_eq!(
            to_text(&encode(i16::MIN, SIGN_NEG, 16383, &[1])),
            "0.".to_owned() + &"0".repeat(16383)
        );
        assert_eq!(to_text(&encode(0, SIGN_NAN, 7, &[12])), "NaN");
        assert_eq!(to_text(&encode(3, SIGN_NINF, 0, &[])), "-Infinity");
    }

    #[test]
    fn long_values_round_trip() {
        let integer = "9".repeat(1500);
        let fraction = "1234567".repeat(200);
        let text = format!("{integer}.{fraction}");
        let bytes = to_binary(&text);
        assert_eq!(to_text(&bytes), text);
        assert_eq!(bytes, reference_binary(&text));

        let negative = format!("-1{}.{}1", "0".repeat(2001), "0".repeat(1003));
        assert_eq!(to_text(&to_binary(&negative)), negative);
        assert_eq!(to_binary(&negative), reference_binary(&negative));

        let hex = format!("0x1{}", "0".repeat(300));
        assert_eq!(to_text(&to_binary(&hex)), power_of_two_text(1200));
        let binary = format!("0b1{}", "0".repeat(777));
        assert_eq!(to_text(&to_binary(&binary)), power_of_two_text(777));
        let octal = format!("0o1{}", "0".repeat(100));
        assert_eq!(to_text(&to_binary(&octal)), power_of_two_text(300));
    }

    #[test]
    fn appends_to_existing_buffers() {
        let mut text = String::from("x=");
        numeric_to_text_into(&to_binary("-1.50"), &mut text).unwrap();
        assert_eq!(text, "x=-1.50");
        let mut bytes = vec![0xAA];
        text_to_numeric_into("10000", &mut bytes).unwrap();
        assert_eq!(bytes, [0xAA, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1]);
    }

    /// Decimal text of 2^exponent by repeated doubling, independent of the codec.
    fn power_of_two_text(exponent: u32) -> String {
        let mut digits = vec![1u8];
        for _ in 0..exponent {
            let mut carry = 0;
            for digit in digits.iter_mut() {
                let value = *digit * 2 + carry;
                *digit = value % 10;
                carry = value / 10;
            }
            if carry > 0 {
                digits.push(carry);
            }
        }
        digits.iter().rev().map(|d| char::from(b'0' + d)).collect()
    }

    /// Slow string-based encoder for canonical text, used as an oracle.
    fn reference_binary(canonical: &str) -> Vec<u8> {
        let (negative, unsigned) = match canonical.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, canonical),
        };
        let (integer, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let mut integer = integer.to_owned();
        while integer.len() % 4 != 0 {
            integer.insert(0, '0');
        }
        let mut fraction_padded = fraction.to_owned();
        while fraction_padded.len() % 4 != 0 {
            fraction_padded.push('0');
        }
        let all = integer.clone() + &fraction_padded;
        let mut groups: Vec<i16> = all
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap().parse().unwrap())
            .collect();
        let mut weight = (integer.len() / 4) as i16 - 1;
        while groups.first() == Some(&0) {
            groups.remove(0);
            weight -= 1;
        }
        while groups.last() == Some(&0) {
            groups.pop();
        }
        if groups.is_empty() {
            weight = 0;
        }
        let sign = if negative && !groups.is_empty() {
            SIGN_NEG
        } else {
            SIGN_POS
        };
        encode(weight, sign, fraction.len() as u16, &groups)
    }

    /// Canonical text for sign, digit strings and exponent, by moving the point.
    fn reference_text(negative: bool, integer: &str, fraction: &str, exponent: i64) -> String {
        let digits = format!("{integer}{fraction}");
        let point = integer.len() as i64 + exponent;
        let (mut int_part, frac_part) = if point <= 0 {
            (String::new(), "0".repeat((-point) as usize) + &digits)
        } else if point as usize >= digits.len() {
            (
                digits.clone() + &"0".repeat(point as usize - digits.len()),
                String::new(),
            )
        } else {
            (
                digits[..point as usize].to_owned(),
                digits[point as usize..].to_owned(),
            )
        };
        let trimmed = int_part.trim_start_matches('0');
        int_part = if trimmed.is_empty() {
            "0".to_owned()
        } else {
            trimmed.to_owned()
        };
        let nonzero = digits.bytes().any(|b| b != b'0');
        let mut out = String::new();
        if negative && nonzero {
            out.push('-');
        }
        out.push_str(&int_part);
        if !frac_part.is_empty() {
            out.push('.');
            out.push_str(&frac_part);
        }
        out
    }

    /// Small deterministic generator so the test needs no extra dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }

        fn digits(&mut self, max_len: u64) -> String {
            let len = self.below(max_len + 1);
            // Bias toward zeros so runs of zero groups get exercised.
            (0..len)
                .map(|_| {
                    if self.below(3) == 0 {
                        '0'
                    } else {
                        char::from(b'0' + self.below(10) as u8)
                    }
                })
                .collect()
        }
    }

    #[test]
    fn generated_values_round_trip() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let negative = rng.below(2) == 0;
            let mut integer = rng.digits(30);
            let fraction = rng.digits(30);
            let has_point = rng.below(2) == 0 || !fraction.is_empty();
            if integer.is_empty() && fraction.is_empty() {
                integer.push('0');
            }
            let exponent = if rng.below(3) == 0 {
                rng.below(41) as i64 - 20
            } else {
                0
            };
            let mut input = String::new();
            if negative {
                input.push('-');
            } else if rng.below(4) == 0 {
                input.push('+');
            }
            input.push_str(&integer);
            if has_point {
                input.push('.');
                input.push_str(&fraction);
            }
            if exponent != 0 || rng.below(8) == 0 {
                input.push(if rng.below(2) == 0 { 'e' } else { 'E' });
                input.push_str(&exponent.to_string());
            }

            let expected = reference_text(negative, &integer, &fraction, exponent);
            let bytes = to_binary(&input);
            assert_eq!(to_text(&bytes), expected, "input {input:?}");
            assert_eq!(bytes, reference_binary(&expected), "input {input:?}");
            assert_eq!(to_binary(&expected), bytes, "canonical {expected:?}");
        }
    }
}
