package auth

import (
	"fmt"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/registry"
)

// roles pairs each stored role name with its API enum.
var roles = []struct {
	name  string
	proto casarev1.Role
}{
	{registry.RoleViewer, casarev1.Role_ROLE_VIEWER},
	{registry.RoleOperator, casarev1.Role_ROLE_OPERATOR},
	{registry.RoleAdmin, casarev1.Role_ROLE_ADMIN},
}

// RoleFromProto converts an API role to its stored name.
func RoleFromProto(r casarev1.Role) (string, error) {
	for _, role := range roles {
		if role.proto == r {
			return role.name, nil
		}
	}
	return "", fmt.Errorf("unknown role %v", r)
}

// RoleToProto converts a stored role name to the API enum; UNSPECIFIED for
// a name it does not know.
func RoleToProto(name string) casarev1.Role {
	for _, role := range roles {
		if role.name == name {
			return role.proto
		}
	}
	return casarev1.Role_ROLE_UNSPECIFIED
}

// ParseRole accepts a role name as users type it: admin, operator, viewer.
func ParseRole(s string) (string, error) {
	if RoleToProto(s) == casarev1.Role_ROLE_UNSPECIFIED {
		return "", fmt.Errorf("unknown role %q: use admin, operator or viewer", s)
	}
	return s, nil
}

// roleName names a role for messages.
func roleName(r casarev1.Role) string {
	if name, err := RoleFromProto(r); err == nil {
		return name
	}
	return "no"
}
