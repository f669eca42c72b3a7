//! [`coded_enum!`]: an enum of reasons, each with a stable code, whose list of values and
//! codes the compiler keeps: adding a variant adds it to `ALL` and needs its code, with nothing
//! else to remember. Used for the verifier's rejections and by relying parties for their own.

/// Declares a field-less enum whose variants each carry a stable `snake_case` code:
///
/// ```
/// handoff::coded_enum! {
///     #[derive(Debug, Clone, Copy, PartialEq, Eq)]
///     pub enum Outcome {
///         /// It worked.
///         Ok = "ok",
///         /// It did not.
///         Failed = "failed",
///     }
/// }
/// assert_eq!(Outcome::ALL, [Outcome::Ok, Outcome::Failed]);
/// assert_eq!(Outcome::Failed.code(), "failed");
/// assert_eq!(Outcome::Failed.index(), 1);
/// ```
///
/// The enum must derive `Clone` and `Copy`. It gets `ALL` (every variant, in declaration
/// order), `code()`, and `index()` (the place in `ALL`, for tables built once per value).
#[macro_export]
macro_rules! coded_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal, )+
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// A stable, snake_case code for logs and metrics.
            pub const fn code(&self) -> &'static str {
                match self {
                    $( $name::$variant => $code, )+
                }
            }

            /// This value's place in [`Self::ALL`].
            pub const fn index(&self) -> usize {
                *self as usize
            }
        }
    };
}
