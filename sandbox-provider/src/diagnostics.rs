//! Error diagnostics built without tf-provider's constructors, which append a backtrace to the
//! detail whenever RUST_BACKTRACE or RUST_LIB_BACKTRACE asks for one. Terraform shows the
//! summary and the detail to the user: both are plain sentences.

use std::borrow::Cow;

use tf_provider::{AttributePath, Diagnostic, Diagnostics};

pub fn error(
    diags: &mut Diagnostics,
    summary: impl Into<Cow<'static, str>>,
    detail: impl Into<Cow<'static, str>>,
) {
    diags.add_error(Diagnostic {
        summary: summary.into(),
        detail: detail.into(),
        attribute: AttributePath::default(),
    });
}

pub fn attribute_error(
    diags: &mut Diagnostics,
    attribute: &str,
    summary: impl Into<Cow<'static, str>>,
    detail: impl Into<Cow<'static, str>>,
) {
    diags.add_error(Diagnostic {
        summary: summary.into(),
        detail: detail.into(),
        attribute: AttributePath::new(attribute.to_owned()),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_no_backtrace_whatever_the_environment() {
        // Diagnostic::new would capture one when RUST_BACKTRACE=1 is set (as on CI machines).
        let mut diags = Diagnostics::default();
        error(&mut diags, "Summary", "Detail.");
        attribute_error(
            &mut diags,
            "name",
            "Empty value",
            "The attribute name must not be empty.",
        );
        assert_eq!(diags.errors.len(), 2);
        assert_eq!(diags.errors[0].detail, "Detail.");
        assert_eq!(
            diags.errors[1].detail,
            "The attribute name must not be empty."
        );
    }
}
