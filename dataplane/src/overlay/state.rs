//! The overlay membership's wire form is the contract crate's ([`vswitch_api::overlay`]): what the control
//! plane pushes to the switch (`overlay_update`, and `vswitchd replay --overlay FILE`) and what `network inspect`
//! shows. Re-exported here so the overlay tables name one definition.

pub use vswitch_api::overlay::{
    EndpointInfo, Member, MemberInfo, OverlayError, OverlayInspect, OverlayState, PeerCounters, RemoteEndpoint,
    UpdateSummary,
};
