-- The transition run alone: its keys and arguments are the script's own.
local K, A = KEYS, ARGV
