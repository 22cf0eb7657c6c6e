//! Test harness for the local emulator stack.
