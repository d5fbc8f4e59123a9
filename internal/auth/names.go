package auth

import "github.com/godbus/dbus/v5"

// The D-Bus names of Mender's authentication service (docs/protocol.md §9).
// They are exact: the daemon must interoperate with mender-auth.
const (
	// BusName is the well-known name the service owns on the system bus.
	BusName = "io.mender.AuthenticationManager"
	// ObjectPath is where the service exports its interface.
	ObjectPath dbus.ObjectPath = "/io/mender/AuthenticationManager"
	// Interface is the service's interface.
	Interface = "io.mender.Authentication1"
	// MethodGetJwtToken returns (token, server_url), both empty when
	// unauthorised.
	MethodGetJwtToken = Interface + ".GetJwtToken"
	// MethodFetchJwtToken asks for re-authentication; returns a bool at once.
	MethodFetchJwtToken = Interface + ".FetchJwtToken"
	// SignalMember is the member name of the token signal.
	SignalMember = "JwtTokenStateChange"
	// SignalJwtTokenStateChange carries (token, server_url) after every
	// authentication attempt.
	SignalJwtTokenStateChange = Interface + "." + SignalMember
)
