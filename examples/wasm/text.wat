;; TEXT for weft: the host calls alloc(len), writes the bytes, and passes (ptr, len);
;; a TEXT result comes back as one i64: ptr << 32 | len.
(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (func (export "alloc") (param $len i32) (result i32)
    (local $at i32)
    global.get $next
    local.set $at
    global.get $next
    local.get $len
    i32.add
    global.set $next
    local.get $at)
  ;; slug: ASCII lower case, and every byte that is not a letter or digit becomes '-'.
  (func (export "slug") (param $ptr i32) (param $len i32) (result i64)
    (local $i i32) (local $c i32)
    (block $done
      (loop $next
        local.get $i
        local.get $len
        i32.ge_u
        br_if $done
        local.get $ptr
        local.get $i
        i32.add
        i32.load8_u
        local.set $c
        ;; upper case to lower case
        (if (i32.and (i32.ge_u (local.get $c) (i32.const 65)) (i32.le_u (local.get $c) (i32.const 90)))
          (then (local.set $c (i32.add (local.get $c) (i32.const 32)))))
        ;; keep a-z and 0-9, everything else becomes '-'
        (if (i32.eqz (i32.or
              (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 122)))
              (i32.and (i32.ge_u (local.get $c) (i32.const 48)) (i32.le_u (local.get $c) (i32.const 57)))))
          (then (local.set $c (i32.const 45))))
        (i32.store8 (i32.add (local.get $ptr) (local.get $i)) (local.get $c))
        local.get $i
        i32.const 1
        i32.add
        local.set $i
        br $next))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
      (i64.extend_i32_u (local.get $len)))))
