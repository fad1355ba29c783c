package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// defaultTimerSlack is the masters' and workers' timer slack
// (setTimerSlack).
const defaultTimerSlack = time.Millisecond

const (
	timerSlackUsage   = "how late the kernel may end this process's timed sleeps, to wake it fewer times (Linux's timer slack; 0 keeps the kernel's, 50us by default)"
	timerSlackWarning = "--timer-slack not applied to every thread, which keep the kernel's (50us by default): run as root or with CAP_SYS_NICE, or pass --timer-slack 0"
)

// setTimerSlack sets the timer slack of every thread of this process to d:
// the kernel may then end any of their sleeps (nanosleep, futex and
// epoll_wait timeouts) up to d late, to fire them together with other
// wakeups, as systemd's TimerSlackNSec= does for a service. The kernel's
// default is 50 us. Threads started later inherit it from the thread that
// starts them.
//
// The Go runtime's monitor thread (sysmon) sleeps 20 us at a time while any
// goroutine runs or waits in a system call: on a master, whose goroutines
// spend much of a write in fdatasync, tens of thousands of wakeups a second,
// each a context switch (on a virtual machine an exit to the host too), and
// each a chance to hand a processor over to another thread. With a slack of
// 1 ms it wakes about once a millisecond; its duties (taking a processor
// back from a long system call, preempting a goroutine after 10 ms) allow
// that. A worker's shims and containers' inits inherit the worker's slack;
// the containers' programs do not (shim.ContainerTimerSlack). Measured in
// docs/performance.md.
func setTimerSlack(d time.Duration) error {
	if d <= 0 {
		return nil
	}
	ns := d.Nanoseconds()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(ns), 0, 0, 0); err != nil {
		return fmt.Errorf("set the timer slack: %w", err)
	}
	self := unix.Gettid()
	want := strconv.FormatInt(ns, 10)
	// A thread started from one not yet set while this runs has the old
	// slack: go over the threads until all have it.
	for range 5 {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("set the timer slack: %w", err)
		}
		changed := 0
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || tid == self {
				continue
			}
			// Per thread, under /proc/TID (not /proc/self/task/TID).
			path := fmt.Sprintf("/proc/%d/timerslack_ns", tid)
			if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) == want {
				continue
			}
			if err := os.WriteFile(path, []byte(want), 0); err != nil {
				if errors.Is(err, os.ErrNotExist) {
					continue // the thread ended
				}
				return fmt.Errorf("set the timer slack of the process's other threads (it needs CAP_SYS_NICE): %w", err)
			}
			changed++
		}
		if changed == 0 {
			return nil
		}
	}
	return nil
}
