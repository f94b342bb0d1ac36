//! The identity rule, in one place: the INS (Identité Nationale de Santé) is used only when the patient's
//! identity is qualified; otherwise it appears nowhere in the output.
//!
//! - HL7v2 (PAM FR 2.11.2 §6.6.1, §6.6.15): the identity is qualified when the first PID-32 repetition is
//!   `VALI` ("le matricule INS est renseigné … uniquement si l'identité du patient a été qualifiée … PID.32 =
//!   VALI"); a receiver gets the message but without the INS otherwise. The ADT mapping makes the statuses
//!   configurable and can refuse RNIV attributes (`DOUT`, `FICT`) in later repetitions: [`pid32_qualified`].
//! - CDA (CI-SIS, Structuration minimale): a sender puts the INS in the document only once the identity is
//!   qualified; what a receiver can check is an INS with its OID and the four INS traits (birth family name,
//!   first given name, birth date, sex `M` or `F`): [`cda_traits_complete`].

/// The PID-32 status of a qualified identity (PAM FR table 0445).
pub const VALI: &str = "VALI";

/// The RNIV identity attributes (PAM FR table 0445) that forbid using the INS whatever the status: a doubtful
/// (`DOUT`) or fictitious (`FICT`) identity. `mappings/adt.toml` ships the same list for the ADT mapping.
pub const NEVER_WITH: [&str; 2] = ["DOUT", "FICT"];

/// True when `statuses` (the PID-32 repetitions, in order) make the identity qualified: the first one is in
/// `qualified_when` (PAM FR: `[VALI]`) and none is in `never_with` (PAM FR: none).
pub fn pid32_qualified<S: AsRef<str>, Q: AsRef<str>>(
    statuses: &[S],
    qualified_when: &[Q],
    never_with: &[Q],
) -> bool {
    let is_in = |list: &[Q], s: &S| list.iter().any(|q| q.as_ref() == s.as_ref());
    statuses.first().is_some_and(|s| is_in(qualified_when, s))
        && !statuses.iter().any(|s| is_in(never_with, s))
}

/// The INS when the identity is qualified, else nothing: the one gate every INS goes through.
pub fn ins_if_qualified<T>(ins: Option<T>, qualified: bool) -> Option<T> {
    if qualified { ins } else { None }
}

/// The CDA check: an INS (15 characters) and the four INS traits, each present and non-blank; `gender` is
/// the HL7 AdministrativeGender code, `birth_time` a CDA TS (at least `YYYYMMDD`).
pub fn cda_traits_complete(
    ins: Option<&str>,
    birth_family: Option<&str>,
    first_given: Option<&str>,
    birth_time: Option<&str>,
    gender: Option<&str>,
) -> bool {
    let has = |v: Option<&str>| v.is_some_and(|s| !s.trim().is_empty());
    ins.is_some_and(|ins| ins.len() == 15)
        && has(birth_family)
        && has(first_given)
        && birth_time.is_some_and(|t| t.len() >= 8)
        && matches!(gender, Some("M" | "F"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_first_vali_qualifies_under_the_pam_fr_rule() {
        let pam = |s: &[&str]| pid32_qualified(s, &[VALI], &[]);
        assert!(pam(&["VALI"]));
        assert!(pam(&["VALI", "HOMA"]));
        assert!(!pam(&["PROV", "VALI"]));
        assert!(!pam(&[]));
    }

    #[test]
    fn never_with_statuses_disqualify() {
        let adt = |s: &[&str]| pid32_qualified(s, &[VALI], &["DOUT", "FICT"]);
        assert!(!adt(&["VALI", "FICT"]));
        assert!(adt(&["VALI", "HOMA"]));
    }

    #[test]
    fn the_ins_passes_only_when_qualified() {
        assert_eq!(ins_if_qualified(Some("1"), true), Some("1"));
        assert_eq!(ins_if_qualified(Some("1"), false), None);
    }

    #[test]
    fn a_cda_identity_needs_the_ins_and_its_four_traits() {
        let ins = Some("279035121518989");
        assert!(cda_traits_complete(ins, Some("DUPONT"), Some("Marie"), Some("19790328"), Some("F")));
        assert!(!cda_traits_complete(ins, Some("DUPONT"), Some("Marie"), Some("19790328"), Some("U")));
        assert!(!cda_traits_complete(ins, Some(" "), Some("Marie"), Some("19790328"), Some("F")));
        assert!(!cda_traits_complete(
            Some("123"),
            Some("DUPONT"),
            Some("Marie"),
            Some("19790328"),
            Some("F")
        ));
    }
}
