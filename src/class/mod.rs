//! The shared vocabulary of the cores: which kind of red-flag value a field holds
//! and what a role's policy does with it.

use std::fmt;

/// A class of red-flag value. Policies attach selectors and actions to classes;
/// detectors report the class of what they find.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum FieldClass {
    /// Social Security Number.
    Ssn,
    /// Taxpayer identification number: EIN, ITIN.
    Tin,
    /// Driver's license number.
    Dln,
    /// Passport number.
    Passport,
    /// Payment card number (PAN).
    CardNumber,
    /// Payment card expiry date.
    CardExpiry,
    /// Bank account number.
    BankAccount,
    /// ABA routing number.
    BankRouting,
    /// Date of birth.
    Dob,
}

impl FieldClass {
    /// Number of classes; sizes per-class tables.
    pub const COUNT: usize = 9;
    /// Every class, in index order.
    pub const ALL: [FieldClass; FieldClass::COUNT] = [
        FieldClass::Ssn,
        FieldClass::Tin,
        FieldClass::Dln,
        FieldClass::Passport,
        FieldClass::CardNumber,
        FieldClass::CardExpiry,
        FieldClass::BankAccount,
        FieldClass::BankRouting,
        FieldClass::Dob,
    ];

    /// Position in [`FieldClass::ALL`]; indexes per-class tables.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The name used in policy files, headers and audit records.
    pub const fn name(self) -> &'static str {
        match self {
            FieldClass::Ssn => "ssn",
            FieldClass::Tin => "tin",
            FieldClass::Dln => "dln",
            FieldClass::Passport => "passport",
            FieldClass::CardNumber => "card_number",
            FieldClass::CardExpiry => "card_expiry",
            FieldClass::BankAccount => "bank_account",
            FieldClass::BankRouting => "bank_routing",
            FieldClass::Dob => "dob",
        }
    }

    /// Parses a policy-file class name (exact, lower case).
    pub fn from_name(name: &str) -> Option<FieldClass> {
        FieldClass::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for FieldClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a role's policy does with a value of some class.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Action {
    /// Pass the value unchanged.
    Clear,
    /// Mask all but the last four characters, keeping the value's shape.
    Last4,
    /// Remove the field (key and value).
    Remove,
    /// Replace the value by a fixed token.
    Redact,
    /// Decrypt a card envelope (only with a grant); anything else is masked.
    Decrypt,
}

impl Action {
    /// Number of actions; sizes per-action tables.
    pub const COUNT: usize = 5;
    /// Every action, in index order.
    pub const ALL: [Action; Action::COUNT] = [
        Action::Clear,
        Action::Last4,
        Action::Remove,
        Action::Redact,
        Action::Decrypt,
    ];

    /// Position in [`Action::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The name used in policy files.
    pub const fn name(self) -> &'static str {
        match self {
            Action::Clear => "clear",
            Action::Last4 => "last4",
            Action::Remove => "remove",
            Action::Redact => "redact",
            Action::Decrypt => "decrypt",
        }
    }

    /// Parses a policy-file action name.
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }

    /// True when the action lets a clear red-flag value leave the gateway.
    pub const fn releases_clear_value(self) -> bool {
        matches!(self, Action::Clear | Action::Decrypt)
    }
}

/// The action for every class: what one response does with each kind of value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ActionTable(pub [Action; FieldClass::COUNT]);

impl ActionTable {
    /// Every class gets the same action.
    pub const fn uniform(action: Action) -> ActionTable {
        ActionTable([action; FieldClass::COUNT])
    }

    /// The action for `class`.
    pub const fn get(&self, class: FieldClass) -> Action {
        self.0[class.index()]
    }

    /// Sets the action for `class`.
    pub fn set(&mut self, class: FieldClass, action: Action) {
        self.0[class.index()] = action;
    }
}

impl Default for ActionTable {
    fn default() -> Self {
        ActionTable::uniform(Action::Last4)
    }
}

pub mod words;
