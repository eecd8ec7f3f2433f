// PII detection and masking for request bodies: one compiled Masker per tenant (see docs/masking.md).
export {
  BUILTIN_KINDS,
  DEFAULT_CONTENT_TYPES,
  DEFAULT_MAX_BYTES,
  MASKING_ACTIONS,
  MAX_CUSTOM_PATTERNS,
  MAX_MAX_BYTES,
  MAX_PATTERN_LENGTH,
  customPatternProblem,
  customPatternSchema,
  maskingSchema,
  type BuiltinKind,
  type CustomPatternConfig,
  type MaskingAction,
  type MaskingConfig,
  type MaskingConfigInput,
} from './schema.js';
export { compileMasking, type MaskResult, type Masker } from './transform.js';
