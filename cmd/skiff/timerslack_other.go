//go:build !linux

package main

import "time"

const (
	defaultTimerSlack = time.Duration(0)
	timerSlackUsage   = "Linux only"
	timerSlackWarning = ""
)

// setTimerSlack is Linux's only.
func setTimerSlack(time.Duration) error { return nil }
