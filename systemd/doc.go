// Package systemd holds callbox's systemd unit, callbox.service; its test
// checks the unit with systemd-analyze. There is no Go code here.
package systemd
