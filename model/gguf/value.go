package gguf

import (
	"fmt"
	"math"
)

// ValueType is the on-disk type tag of a metadata value.
type ValueType uint32

// The GGUF metadata value types.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

func (t ValueType) String() string {
	switch t {
	case TypeUint8:
		return "uint8"
	case TypeInt8:
		return "int8"
	case TypeUint16:
		return "uint16"
	case TypeInt16:
		return "int16"
	case TypeUint32:
		return "uint32"
	case TypeInt32:
		return "int32"
	case TypeFloat32:
		return "float32"
	case TypeBool:
		return "bool"
	case TypeString:
		return "string"
	case TypeArray:
		return "array"
	case TypeUint64:
		return "uint64"
	case TypeInt64:
		return "int64"
	case TypeFloat64:
		return "float64"
	}
	return fmt.Sprintf("ValueType(%d)", uint32(t))
}

// Valid reports whether t is a known value type.
func (t ValueType) Valid() bool { return t <= TypeFloat64 }

// size is the encoded size of a fixed-size value, or 0 for string and array.
func (t ValueType) size() int {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

// minSize is the smallest encoding of a value of type t, used to bound
// element counts before allocating: a string is at least its 8-byte length.
func (t ValueType) minSize() int {
	switch t {
	case TypeString:
		return 8
	case TypeArray:
		return 12
	}
	return t.size()
}

// Value is one metadata value. A scalar holds the Go type matching its
// ValueType (uint8 ... float64, bool, string); an array holds a slice of
// its element type ([]uint8 ... []string). Values are immutable.
type Value struct {
	typ  ValueType
	elem ValueType // element type of an array
	x    any
}

// NewValue makes a Value from a Go scalar (uint8, int8, uint16, int16,
// uint32, int32, float32, bool, string, uint64, int64, float64) or a slice of
// one of those, which becomes an array. Other types are rejected with
// ErrValueType; an int is stored as int64 and a []int as []int64.
func NewValue(v any) (Value, error) {
	switch x := v.(type) {
	case uint8:
		return Value{typ: TypeUint8, x: x}, nil
	case int8:
		return Value{typ: TypeInt8, x: x}, nil
	case uint16:
		return Value{typ: TypeUint16, x: x}, nil
	case int16:
		return Value{typ: TypeInt16, x: x}, nil
	case uint32:
		return Value{typ: TypeUint32, x: x}, nil
	case int32:
		return Value{typ: TypeInt32, x: x}, nil
	case float32:
		return Value{typ: TypeFloat32, x: x}, nil
	case bool:
		return Value{typ: TypeBool, x: x}, nil
	case string:
		return Value{typ: TypeString, x: x}, nil
	case uint64:
		return Value{typ: TypeUint64, x: x}, nil
	case int64:
		return Value{typ: TypeInt64, x: x}, nil
	case int:
		return Value{typ: TypeInt64, x: int64(x)}, nil
	case float64:
		return Value{typ: TypeFloat64, x: x}, nil
	case []int:
		y := make([]int64, len(x))
		for i, e := range x {
			y[i] = int64(e)
		}
		return arrayValue(TypeInt64, y), nil
	}
	if et, ok := sliceElemType(v); ok {
		return arrayValue(et, v), nil
	}
	return Value{}, fmt.Errorf("%w: cannot store %T in GGUF metadata", ErrValueType, v)
}

func arrayValue(elem ValueType, slice any) Value {
	return Value{typ: TypeArray, elem: elem, x: slice}
}

func sliceElemType(v any) (ValueType, bool) {
	switch v.(type) {
	case []uint8:
		return TypeUint8, true
	case []int8:
		return TypeInt8, true
	case []uint16:
		return TypeUint16, true
	case []int16:
		return TypeInt16, true
	case []uint32:
		return TypeUint32, true
	case []int32:
		return TypeInt32, true
	case []float32:
		return TypeFloat32, true
	case []bool:
		return TypeBool, true
	case []string:
		return TypeString, true
	case []uint64:
		return TypeUint64, true
	case []int64:
		return TypeInt64, true
	case []float64:
		return TypeFloat64, true
	}
	return 0, false
}

// Type is the value's type tag.
func (v Value) Type() ValueType { return v.typ }

// ElemType is an array's element type (meaningless for scalars).
func (v Value) ElemType() ValueType { return v.elem }

// Raw is the underlying Go value: a scalar or a typed slice (see Value).
// Callers must not modify a returned slice.
func (v Value) Raw() any { return v.x }

// Len is an array's element count, or 0 for a scalar.
func (v Value) Len() int {
	if v.typ != TypeArray {
		return 0
	}
	switch x := v.x.(type) {
	case []uint8:
		return len(x)
	case []int8:
		return len(x)
	case []uint16:
		return len(x)
	case []int16:
		return len(x)
	case []uint32:
		return len(x)
	case []int32:
		return len(x)
	case []float32:
		return len(x)
	case []bool:
		return len(x)
	case []string:
		return len(x)
	case []uint64:
		return len(x)
	case []int64:
		return len(x)
	case []float64:
		return len(x)
	}
	return 0
}

func (v Value) mismatch(want string) error {
	if v.typ == TypeArray {
		return fmt.Errorf("%w: have array of %v, want %s", ErrValueType, v.elem, want)
	}
	return fmt.Errorf("%w: have %v, want %s", ErrValueType, v.typ, want)
}

// asInt widens any integer scalar; the bool reports whether x was signed.
func asInt(x any) (u uint64, i int64, signed, ok bool) {
	switch y := x.(type) {
	case uint8:
		return uint64(y), 0, false, true
	case uint16:
		return uint64(y), 0, false, true
	case uint32:
		return uint64(y), 0, false, true
	case uint64:
		return y, 0, false, true
	case int8:
		return 0, int64(y), true, true
	case int16:
		return 0, int64(y), true, true
	case int32:
		return 0, int64(y), true, true
	case int64:
		return 0, y, true, true
	}
	return 0, 0, false, false
}

// Uint returns an integer value of any width or signedness as uint64;
// negative values are an error. GGUF writers disagree on the widths of counts
// and ids, hence the leniency.
func (v Value) Uint() (uint64, error) {
	u, i, signed, ok := asInt(v.x)
	switch {
	case !ok || v.typ == TypeArray:
		return 0, v.mismatch("an integer")
	case signed && i < 0:
		return 0, fmt.Errorf("%w: %d is negative", ErrValueType, i)
	case signed:
		return uint64(i), nil
	}
	return u, nil
}

// Int returns an integer value of any width as int64; a uint64 above
// MaxInt64 is an error.
func (v Value) Int() (int64, error) {
	u, i, signed, ok := asInt(v.x)
	switch {
	case !ok || v.typ == TypeArray:
		return 0, v.mismatch("an integer")
	case signed:
		return i, nil
	case u > math.MaxInt64:
		return 0, fmt.Errorf("%w: %d overflows int64", ErrValueType, u)
	}
	return int64(u), nil
}

// Float returns a float32 or float64 value, or an integer converted.
func (v Value) Float() (float64, error) {
	switch y := v.x.(type) {
	case float32:
		return float64(y), nil
	case float64:
		return y, nil
	}
	if v.typ != TypeArray {
		if n, err := v.Int(); err == nil {
			return float64(n), nil
		}
		if n, err := v.Uint(); err == nil {
			return float64(n), nil
		}
	}
	return 0, v.mismatch("a number")
}

// Bool returns a bool value.
func (v Value) Bool() (bool, error) {
	if b, ok := v.x.(bool); ok {
		return b, nil
	}
	return false, v.mismatch("bool")
}

// Str returns a string value. (String formats any value for display.)
func (v Value) Str() (string, error) {
	if s, ok := v.x.(string); ok {
		return s, nil
	}
	return "", v.mismatch("string")
}

// Strings returns an array of strings. The slice is shared: do not modify.
func (v Value) Strings() ([]string, error) {
	if s, ok := v.x.([]string); ok {
		return s, nil
	}
	return nil, v.mismatch("array of string")
}

// Ints returns an array of any integer type widened to int64 (a fresh
// slice); uint64 elements above MaxInt64 are an error.
func (v Value) Ints() ([]int64, error) {
	n := v.Len()
	out := make([]int64, 0, n)
	switch x := v.x.(type) {
	case []uint8:
		for _, e := range x {
			out = append(out, int64(e))
		}
	case []int8:
		for _, e := range x {
			out = append(out, int64(e))
		}
	case []uint16:
		for _, e := range x {
			out = append(out, int64(e))
		}
	case []int16:
		for _, e := range x {
			out = append(out, int64(e))
		}
	case []uint32:
		for _, e := range x {
			out = append(out, int64(e))
		}
	case []int32:
		for _, e := range x {
			out = append(out, int64(e))
		}
	case []int64:
		out = append(out, x...)
	case []uint64:
		for _, e := range x {
			if e > math.MaxInt64 {
				return nil, fmt.Errorf("%w: %d overflows int64", ErrValueType, e)
			}
			out = append(out, int64(e))
		}
	default:
		return nil, v.mismatch("array of integers")
	}
	return out, nil
}

// Floats returns an array of float32 (shared: do not modify) or of float64
// narrowed to float32 (a fresh slice).
func (v Value) Floats() ([]float32, error) {
	switch x := v.x.(type) {
	case []float32:
		return x, nil
	case []float64:
		out := make([]float32, len(x))
		for i, e := range x {
			out[i] = float32(e)
		}
		return out, nil
	}
	return nil, v.mismatch("array of floats")
}

// String formats the value for display; long arrays are abbreviated.
func (v Value) String() string {
	switch x := v.x.(type) {
	case string:
		return fmt.Sprintf("%q", x)
	case []string:
		if len(x) > 4 {
			return fmt.Sprintf("[%d strings: %q ...]", len(x), x[:4])
		}
		return fmt.Sprintf("%q", x)
	}
	if v.typ == TypeArray && v.Len() > 8 {
		return fmt.Sprintf("[%d x %v]", v.Len(), v.elem)
	}
	return fmt.Sprint(v.x)
}
