//go:build !linux

package worker

func setSubreaper() {}
