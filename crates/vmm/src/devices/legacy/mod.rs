//! Legacy PC devices: serial console, i8042 (reset and Ctrl-Alt-Del), boot timer.
