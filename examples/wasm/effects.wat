;; An effect requested by a pure function: alert(url TEXT, message TEXT) RETURNS TEXT does no I/O,
;; it returns the description of an HTTP POST as JSON,
;;   {"connector":"http","ability":"http/post","resource":"<url>","payload":{"message":"<message>"}}
;; which a sink `INTO effects('column')` executes, once. (The message is not JSON-escaped: this
;; guest is an example; pass text without quotes or backslashes.)
;; TEXT ABI as in text.wat: alloc(len) -> ptr; arguments come as (ptr, len); the result is
;; ptr << 32 | len.
(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (data (i32.const 0) "{\"connector\":\"http\",\"ability\":\"http/post\",\"resource\":\"")
  (data (i32.const 128) "\",\"payload\":{\"message\":\"")
  (data (i32.const 192) "\"}}")
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $len)))
    (local.get $at))
  ;; Copies len bytes from src to dst and returns dst + len.
  (func $put (param $dst i32) (param $src i32) (param $len i32) (result i32)
    (memory.copy (local.get $dst) (local.get $src) (local.get $len))
    (i32.add (local.get $dst) (local.get $len)))
  (func (export "alert") (param $url i32) (param $url_len i32) (param $message i32) (param $message_len i32) (result i64)
    (local $out i32) (local $at i32) (local $total i32)
    ;; 54 + 24 + 3 bytes of JSON around the two arguments
    (local.set $total (i32.add (i32.const 81) (i32.add (local.get $url_len) (local.get $message_len))))
    (local.set $out (call $alloc (local.get $total)))
    (local.set $at (call $put (local.get $out) (i32.const 0) (i32.const 54)))
    (local.set $at (call $put (local.get $at) (local.get $url) (local.get $url_len)))
    (local.set $at (call $put (local.get $at) (i32.const 128) (i32.const 24)))
    (local.set $at (call $put (local.get $at) (local.get $message) (local.get $message_len)))
    (local.set $at (call $put (local.get $at) (i32.const 192) (i32.const 3)))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
      (i64.extend_i32_u (local.get $total)))))
