//! Arbitrary text must never panic the parser, and whatever it accepts must print in a
//! form that parses back to the same addresses.

#![no_main]

use ferrolb_address::{AddressSet, parse_entry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(range) = parse_entry(text) {
        assert!(range.first_bits() <= range.last_bits());
        let shown = range.to_string();
        if let Ok(again) = parse_entry(&shown) {
            assert_eq!(again, range, "{text:?} printed as {shown:?}");
        }
    }
    if let Ok(set) = AddressSet::parse(text.split(',')) {
        for range in set.ranges() {
            assert!(set.contains(range.first()) && set.contains(range.last()));
        }
    }
});
