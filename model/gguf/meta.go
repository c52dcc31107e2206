package gguf

import (
	"fmt"
	"slices"
)

// Value returns the metadata value for key.
func (f *File) Value(key string) (Value, bool) {
	i, ok := f.kvIndex[key]
	if !ok {
		return Value{}, false
	}
	return f.KV[i].Value, true
}

// Lookup returns the metadata value for key or an error wrapping
// ErrNotFound; combine with the Value accessors for error-returning reads:
// n, err := f.Lookup(k) ... v.Uint().
func (f *File) Lookup(key string) (Value, error) {
	v, ok := f.Value(key)
	if !ok {
		return Value{}, fmt.Errorf("%w: metadata key %q", ErrNotFound, key)
	}
	return v, nil
}

// get applies a Value accessor to key, reporting ok=false when the key is
// missing or holds an incompatible type.
func get[T any](f *File, key string, as func(Value) (T, error)) (T, bool) {
	var zero T
	v, ok := f.Value(key)
	if !ok {
		return zero, false
	}
	x, err := as(v)
	if err != nil {
		return zero, false
	}
	return x, true
}

// require applies a Value accessor to key, naming the key in errors.
func require[T any](f *File, key string, as func(Value) (T, error)) (T, error) {
	var zero T
	v, err := f.Lookup(key)
	if err != nil {
		return zero, err
	}
	x, err := as(v)
	if err != nil {
		return zero, fmt.Errorf("%w (key %q)", err, key)
	}
	return x, nil
}

// String returns a string value.
func (f *File) String(key string) (string, bool) { return get(f, key, Value.Str) }

// Uint returns a non-negative integer value of any integer type.
func (f *File) Uint(key string) (uint64, bool) { return get(f, key, Value.Uint) }

// Int returns an integer value of any integer type.
func (f *File) Int(key string) (int64, bool) { return get(f, key, Value.Int) }

// Float returns a float (or integer) value.
func (f *File) Float(key string) (float64, bool) { return get(f, key, Value.Float) }

// Bool returns a bool value.
func (f *File) Bool(key string) (bool, bool) { return get(f, key, Value.Bool) }

// Strings returns a string array (shared: do not modify).
func (f *File) Strings(key string) ([]string, bool) { return get(f, key, Value.Strings) }

// Ints returns an integer array widened to int64.
func (f *File) Ints(key string) ([]int64, bool) { return get(f, key, Value.Ints) }

// Floats returns a float array as float32.
func (f *File) Floats(key string) ([]float32, bool) { return get(f, key, Value.Floats) }

// Array returns an array value of any element type.
func (f *File) Array(key string) (Value, bool) {
	v, ok := f.Value(key)
	if !ok || v.Type() != TypeArray {
		return Value{}, false
	}
	return v, true
}

// RequireString is String with an error naming the key when it is missing
// (ErrNotFound) or not a string (ErrValueType).
func (f *File) RequireString(key string) (string, error) { return require(f, key, Value.Str) }

// RequireUint is Uint with an error (ErrNotFound, ErrValueType).
func (f *File) RequireUint(key string) (uint64, error) { return require(f, key, Value.Uint) }

// RequireFloat is Float with an error (ErrNotFound, ErrValueType).
func (f *File) RequireFloat(key string) (float64, error) { return require(f, key, Value.Float) }

// RequireStrings is Strings with an error (ErrNotFound, ErrValueType).
func (f *File) RequireStrings(key string) ([]string, error) { return require(f, key, Value.Strings) }

// Keys lists the metadata keys in file order.
func (f *File) Keys() []string {
	keys := make([]string, len(f.KV))
	for i, kv := range f.KV {
		keys[i] = kv.Key
	}
	return keys
}

// sortByOffset orders tensor indices by data offset (name breaks ties so the
// order, and thus the error reported for a bad file, is deterministic).
func sortByOffset(order []int, ts []TensorInfo) {
	slices.SortFunc(order, func(a, b int) int {
		if ts[a].Offset != ts[b].Offset {
			if ts[a].Offset < ts[b].Offset {
				return -1
			}
			return 1
		}
		if ts[a].Name < ts[b].Name {
			return -1
		}
		if ts[a].Name > ts[b].Name {
			return 1
		}
		return 0
	})
}
