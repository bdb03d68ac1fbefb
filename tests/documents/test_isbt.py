"""ISO/IEC 7064 Mod 37-2 check characters and the ISBT 128 donation identifier layout."""
import pytest

from labsys.documents.isbt import din_of, donation_identifier, mod37_2_check, mod37_2_valid, vial_identifier

# Worked by hand with p = 0; p = ((p + v) * 2) mod 37; check = (38 - p) mod 37:
#   "0":  p = (0+0)*2 = 0                          -> check (38-0) mod 37 = 1  -> "1"
#   "A":  p = (0+10)*2 = 20                        -> check 18                 -> "I"
#   "Z9": Z=35: p = 70 mod 37 = 33; 9: (33+9)*2 = 84 mod 37 = 10 -> check 28  -> "S"
#   "W000026000001": W=32 -> 64 mod 37 = 27; 0 -> 54 mod 37 = 17; 0 -> 34; 0 -> 68 mod 37 = 31;
#       0 -> 62 mod 37 = 25; 2 -> 54 mod 37 = 17; 6 -> 46 mod 37 = 9; 0 -> 18; 0 -> 36;
#       0 -> 72 mod 37 = 35; 0 -> 70 mod 37 = 33; 0 -> 66 mod 37 = 29; 1 -> 60 mod 37 = 23
#       -> check (38-23) mod 37 = 15 -> "F"
#   "*":  v = 36: p = 72 mod 37 = 35               -> check 3                  -> "3"
HAND_WORKED = [("0", "1"), ("A", "I"), ("Z9", "S"), ("W000026000001", "F"), ("*", "3")]


@pytest.mark.parametrize("text, check", HAND_WORKED)
def test_check_character_matches_the_examples_worked_by_hand(text, check):
    assert mod37_2_check(text) == check


def test_the_check_character_can_be_36_which_prints_as_a_star():
    # Search the two-character space for a value whose check is 36 ("*"), and confirm the
    # identity behind the algorithm: appending the check makes the full-string residue 1.
    found = [a + b for a in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ" for b in "0123456789"
             if mod37_2_check(a + b) == "*"]
    assert found
    for text in found[:5]:
        assert mod37_2_valid(text + "*")


def test_lower_case_reads_as_upper_case():
    assert mod37_2_check("w000026000001") == "F"


@pytest.mark.parametrize("bad", ["", "W0-1", "é"])
def test_characters_outside_the_alphabet_are_refused(bad):
    with pytest.raises(ValueError):
        mod37_2_check(bad)


def test_every_single_character_substitution_changes_the_check():
    din = "W000026000123"
    check = mod37_2_check(din)
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for position in range(len(din)):
        for replacement in alphabet:
            if replacement != din[position]:
                altered = din[:position] + replacement + din[position + 1:]
                assert mod37_2_check(altered) != check


def test_adjacent_transpositions_are_detected():
    din = "W123426000987"
    for position in range(len(din) - 1):
        if din[position] != din[position + 1]:
            swapped = din[:position] + din[position + 1] + din[position] + din[position + 2:]
            assert not mod37_2_valid(swapped + mod37_2_check(din))


def test_donation_identifier_is_facility_year_and_sequence():
    assert donation_identifier("W0000", 2026, 42) == "W000026000042"
    assert vial_identifier("W000026000042", 7) == "W000026000042007"
    assert din_of("W000026000042007") == "W000026000042"
    assert din_of("W000026000042") == "W000026000042"
    assert din_of("nonsense") is None


@pytest.mark.parametrize("facility", ["O0000", "W000", "W00000", "00000", "w0000!"])
def test_facility_codes_outside_the_isbt_layout_are_refused(facility):
    with pytest.raises(ValueError):
        donation_identifier(facility, 2026, 1)


@pytest.mark.parametrize("sequence", [0, 1_000_000])
def test_sequences_outside_six_digits_are_refused(sequence):
    with pytest.raises(ValueError):
        donation_identifier("W0000", 2026, sequence)
