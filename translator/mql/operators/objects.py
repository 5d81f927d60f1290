"""MQL object expression operators ($mergeObjects, $getField, $setField, ...).

Results are always fresh dicts: an operator never mutates its input document, because
the same document may be referenced by later stages or by the DLQ entry.
"""

from __future__ import annotations

from typing import Any

from translator.mql.expr import Ctx, Expr, ExprError, Vars, compile_expr, const_value, operator
from translator.mql.operators.arrays import named_args, one_arg
from translator.mql.values import MISSING, bson_type


def _show(v: Any) -> str:
    """A value as MongoDB error messages print it (strings in double quotes)."""
    if isinstance(v, str):
        return f'"{v}"'
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _nullish(v: Any) -> bool:
    return v is None or v is MISSING


@operator("$mergeObjects")
def _merge_objects(args: Any, ctx: Ctx) -> Expr:
    """``$mergeObjects``: later documents win; null and missing operands are ignored."""
    items = args if isinstance(args, list) else [args]
    parts = [compile_expr(x, ctx.at(i) if isinstance(args, list) else ctx) for i, x in enumerate(items)]

    def merge_objects(doc: Any, v: Vars) -> Any:
        out: dict[str, Any] = {}
        for f in parts:
            x = f(doc, v)
            if isinstance(x, dict):
                out.update(x)
            elif not _nullish(x):
                raise ExprError(
                    "$mergeObjects",
                    f"$mergeObjects requires object inputs, but input {_show(x)} is of type "
                    f"{bson_type(x)}",
                )
        return out

    return merge_objects


def _field_name(f_field: Expr, doc: Any, v: Vars, op: str) -> str:
    name = f_field(doc, v)
    if not isinstance(name, str):
        raise ExprError(
            op, f"{op} requires 'field' to evaluate to type String, but got {bson_type(name)}"
        )
    return name


@operator("$getField")
def _get_field(args: Any, ctx: Ctx) -> Expr:
    """``$getField``: read one field by its literal name (dots and ``$`` allowed).

    ``{$getField: <field>}`` reads from ``$$CURRENT``; a null/missing ``input`` gives
    null, a non-object input is an error, an absent field is missing (MongoDB 7.2 rules).
    """
    is_full = isinstance(args, dict) and not any(
        isinstance(k, str) and k.startswith("$") for k in args
    )
    if is_full:
        spec = named_args(args, ctx, "$getField", ("field",), ("input",))
        f_field = compile_expr(spec["field"], ctx.at("field"))
        f_input = compile_expr(spec["input"], ctx.at("input")) if "input" in spec else None
    else:
        f_field = compile_expr(args, ctx)
        f_input = None
    name_c = const_value(f_field)
    if name_c is not MISSING and not isinstance(name_c, str):
        raise ctx.error(f"$getField requires 'field' to evaluate to type String, but got {bson_type(name_c)}")

    def get_field(doc: Any, v: Vars) -> Any:
        name = _field_name(f_field, doc, v, "$getField")
        obj = doc if f_input is None else f_input(doc, v)
        if isinstance(obj, dict):
            return obj.get(name, MISSING)
        if _nullish(obj):
            return None
        raise ExprError(
            "$getField", f"$getField requires 'input' to evaluate to type Object, but got {bson_type(obj)}"
        )

    return get_field


def _set_field_common(args: Any, ctx: Ctx, op: str, has_value: bool) -> Expr:
    required = ("field", "input", "value") if has_value else ("field", "input")
    spec = named_args(args, ctx, op, required)
    f_field = compile_expr(spec["field"], ctx.at("field"))
    name = const_value(f_field)
    if not isinstance(name, str):
        raise ctx.at("field").error(
            f"{op} requires 'field' to evaluate to a constant string (use $literal for names "
            f"starting with '$')"
        )
    f_input = compile_expr(spec["input"], ctx.at("input"))
    f_value = compile_expr(spec["value"], ctx.at("value")) if has_value else None

    def set_field(doc: Any, v: Vars) -> Any:
        obj = f_input(doc, v)
        if _nullish(obj):
            return None
        if not isinstance(obj, dict):
            raise ExprError(op, f"{op} requires 'input' to evaluate to type Object, but got {bson_type(obj)}")
        out = dict(obj)
        value = MISSING if f_value is None else f_value(doc, v)
        if value is MISSING:  # $$REMOVE (or $unsetField) removes the field
            out.pop(name, None)
        else:
            out[name] = value
        return out

    return set_field


@operator("$setField")
def _set_field(args: Any, ctx: Ctx) -> Expr:
    """``$setField``: add/replace/remove (value ``$$REMOVE``) one literally named field."""
    return _set_field_common(args, ctx, "$setField", True)


@operator("$unsetField")
def _unset_field(args: Any, ctx: Ctx) -> Expr:
    """``$unsetField``: ``$setField`` with ``value: "$$REMOVE"``."""
    return _set_field_common(args, ctx, "$unsetField", False)


@operator("$objectToArray")
def _object_to_array(args: Any, ctx: Ctx) -> Expr:
    """``$objectToArray``: ``{a: 1}`` → ``[{k: "a", v: 1}]``; null/missing → null."""
    f = compile_expr(one_arg(args, ctx, "$objectToArray"), ctx)

    def object_to_array(doc: Any, v: Vars) -> Any:
        obj = f(doc, v)
        if isinstance(obj, dict):
            return [{"k": k, "v": x} for k, x in obj.items()]
        if _nullish(obj):
            return None
        raise ExprError(
            "$objectToArray", f"$objectToArray requires a document input, found: {bson_type(obj)}"
        )

    return object_to_array


def _check_key(k: Any) -> str:
    if not isinstance(k, str):
        raise ExprError(
            "$arrayToObject",
            "$arrayToObject requires an array of key-value pairs, where the key must be of type "
            f"string. Found key type: {bson_type(k)}",
        )
    if "\x00" in k:
        raise ExprError(
            "$arrayToObject", "Key field cannot contain an embedded null byte"
        )
    return k


@operator("$arrayToObject")
def _array_to_object(args: Any, ctx: Ctx) -> Expr:
    """``$arrayToObject``: ``[[k, v], ...]`` or ``[{k, v}, ...]``; a repeated key keeps its last value."""
    f = compile_expr(one_arg(args, ctx, "$arrayToObject"), ctx)

    def array_to_object(doc: Any, v: Vars) -> Any:
        a = f(doc, v)
        if _nullish(a):
            return None
        if type(a) is not list:
            raise ExprError(
                "$arrayToObject", f"$arrayToObject requires an array input, found: {bson_type(a)}"
            )
        out: dict[str, Any] = {}
        if not a:
            return out
        pairs_form = type(a[0]) is list
        if not pairs_form and not isinstance(a[0], dict):
            raise ExprError(
                "$arrayToObject",
                f"Unrecognised input type format for $arrayToObject: {bson_type(a[0])}",
            )
        for el in a:
            if pairs_form:
                if type(el) is not list:
                    raise ExprError(
                        "$arrayToObject",
                        "$arrayToObject requires a consistent input format. Elements must all be "
                        f"arrays or all be objects. Array was detected, now found: {bson_type(el)}",
                    )
                if len(el) != 2:
                    raise ExprError(
                        "$arrayToObject",
                        f"$arrayToObject requires an array of size 2 arrays,found array of size: {len(el)}",
                    )
                out[_check_key(el[0])] = el[1]
            else:
                if not isinstance(el, dict):
                    raise ExprError(
                        "$arrayToObject",
                        "$arrayToObject requires a consistent input format. Elements must all be "
                        f"arrays or all be objects. Object was detected, now found: {bson_type(el)}",
                    )
                if len(el) != 2:
                    raise ExprError(
                        "$arrayToObject",
                        "$arrayToObject requires an object keys of 'k' and 'v'. Found incorrect "
                        f"number of keys:{len(el)}",
                    )
                if "k" not in el or "v" not in el:
                    raise ExprError(
                        "$arrayToObject",
                        "$arrayToObject requires an object with keys 'k' and 'v'. Missing either "
                        f"or both keys from: {el}",
                    )
                out[_check_key(el["k"])] = el["v"]
        return out

    return array_to_object
