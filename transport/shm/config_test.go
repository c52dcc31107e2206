package shm

import (
	"os"
	"testing"
)

func TestConfig_Validate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		ok     bool
	}{
		{"defaults", func(c *Config) {}, true},
		{"no slots", func(c *Config) { c.Slots = 0 }, false},
		{"too many slots", func(c *Config) { c.Slots = maxSlots + 1 }, false},
		{"tiny slot", func(c *Config) { c.SlotBytes = 100 }, false},
		{"huge slot", func(c *Config) { c.SlotBytes = maxSlotBytes + 1 }, false},
		{"no logger", func(c *Config) { c.Logger = nil }, false},
		{"negative stream threshold", func(c *Config) { c.StreamBytes = -1 }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mutate(&c)
			if err := c.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	c := DefaultConfig()
	if !c.allowed(os.Getuid()) || c.allowed(os.Getuid()+1) {
		t.Error("default must allow exactly this process's uid")
	}
}
