// Package catalog is the WorkSpaces catalog model that hostd and zeroclient share: resource
// identifiers, the API's typed errors, compute types, images and bundles, directories with
// their users and login settings (LDAP, MFA, device access, IP access control groups). It
// holds data and the guide's rules for it; it does no I/O. hostd keeps the records in its
// store and serves them through its API; zeroclient reads them through that API.
package catalog
