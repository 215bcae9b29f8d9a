// Package systemd holds callbox's systemd unit, callbox.service, and the
// sysctl drop-in 99-callbox.conf; its tests check the unit with
// systemd-analyze and the drop-in against this kernel's settings. There
// is no Go code here.
package systemd
